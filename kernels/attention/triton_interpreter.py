"""Running the Triton kernels on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1),
which is how they are tested on machines without a GPU."""

from __future__ import annotations

import numpy as np
import triton
from triton.runtime import interpreter


def interpreting() -> bool:
    """Whether triton.jit functions defined from now on run in the interpreter (TRITON_INTERPRET=1,
    which must be set before the kernel modules are imported)."""
    return bool(triton.knobs.runtime.interpret)


def fix_scalar_index() -> None:
    """Make the interpreter's scalars usable as loop bounds under NumPy >= 2.4.

    The interpreter holds a scalar as a NumPy array of shape (1,) and turns it into a Python int
    with int(array), which NumPy 2.4 refuses (triton-lang/triton#9171, fixed after triton 3.6),
    so every `range` over run-time bounds fails. This wraps the interpreter's tensor patching to
    convert the single element instead. Mutates the interpreter module; idempotent; does nothing
    where NumPy still accepts the conversion."""
    try:
        int(np.ones(1, dtype=np.int32))
        return
    except TypeError:
        pass
    original = interpreter._patch_lang_tensor
    if getattr(original, "fixes_scalar_index", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch_lang_tensor.fixes_scalar_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor
