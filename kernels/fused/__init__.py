"""Fused elementwise ops of a Llama decoder layer: RMSNorm, residual add + RMSNorm, SiLU-and-mul,
and rotary embedding + paged KV-cache write, one kernel launch each on a GPU.

Every op takes `impl`:
  "auto"   the Triton kernel when the tensors are on a CUDA device of compute capability 8.0 or
           newer, triton imports and the shape is one the kernel takes; on CPU tensors, the Triton
           kernel only when TRITON_INTERPRET=1 *and* INTERPRET_ON_CPU is true (env
           ADAPTIVE_SARATHI_FUSED_INTERPRET=1), since the interpreter is orders of magnitude slower
           than torch and tests elsewhere set TRITON_INTERPRET=1 for their own kernels; else the
           plain-torch reference.
  "torch"  the reference (reference.py), any device.
  "triton" the Triton kernel; raises ValueError where it cannot run (no CUDA and no interpreter,
           triton missing, unsupported shape).
Both implementations have one contract (see reference.py for the exact rounding order); results
agree to the tolerances stated in tests/kernels/test_fused_ops.py. Nothing here imports triton
until a Triton kernel is chosen.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

from adaptive_sarathi.kernels.fused.reference import (
    fused_add_rms_norm_reference,
    rms_norm_reference,
    rope_and_write_kv_reference,
    silu_and_mul_reference,
)

IMPLS = ("auto", "torch", "triton")
# Module-level so a test or script can flip it after import; read at every call.
INTERPRET_ON_CPU = os.environ.get("ADAPTIVE_SARATHI_FUSED_INTERPRET", "").lower() in ("1", "true", "on", "yes")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, impl: str = "auto",
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """RMSNorm of each row of x [T, H] with weight [H]: a new [T, H] tensor in out_dtype (default
    x's dtype). Mutates nothing. Rounding: reference.rms_norm_reference."""
    if _pick(impl, x, lambda: _norm_module().supports(x.shape[-1]) and x.dim() == 2) == "triton":
        return _norm_module().rms_norm_triton(x, weight, eps, out_dtype)
    return rms_norm_reference(x, weight, eps, out_dtype)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                       impl: str = "auto", out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """residual [T, H] += x in place (rounded to residual's dtype), then returns rms_norm of the
    updated residual: a new [T, H] tensor in out_dtype (default residual's dtype). The caller keeps
    owning residual."""
    if _pick(impl, x, lambda: _norm_module().supports(x.shape[-1]) and x.dim() == 2
             and residual.stride(-1) == 1) == "triton":
        return _norm_module().fused_add_rms_norm_triton(x, residual, weight, eps, out_dtype)
    return fused_add_rms_norm_reference(x, residual, weight, eps, out_dtype)


def silu_and_mul(gate_up: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """silu(gate) * up of gate_up [T, 2I] (gate first): a new [T, I] tensor in gate_up's dtype,
    computed in fp32 and rounded once. Mutates nothing."""
    if _pick(impl, gate_up, lambda: gate_up.dim() == 2) == "triton":
        return _module("triton_silu").silu_and_mul_triton(gate_up)
    return silu_and_mul_reference(gate_up)


def rope_and_write_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                      cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      slot_mapping: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """Rotates q [T, Hq, D] in place for `positions` (HF non-interleaved halves, fp32 math rounded
    once to q's dtype) and stores rotated k and v [T, Hkv, D] into k_cache/v_cache [blocks,
    block_size, Hkv, D] at slot_mapping (negative slots skipped). k and v are not modified; q, k
    and v may be views of one fused qkv buffer (the caller owns it and the caches). Returns q.
    See reference.rope_and_write_kv_reference for the full contract."""
    def fits() -> bool:
        return _module("triton_rope").supports(q.shape[-1]) and q.stride(-1) == 1
    if _pick(impl, q, fits) == "triton":
        return _module("triton_rope").rope_and_write_kv_triton(q, k, v, positions, cos, sin, k_cache, v_cache,
                                                               slot_mapping)
    return rope_and_write_kv_reference(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping)


def fused_impl(x: torch.Tensor) -> str:
    """The implementation "auto" picks for tensors like x, before shape checks: "triton" or "torch"."""
    return "triton" if _triton_runs_on(x.device) else "torch"


def _pick(impl: str, x: torch.Tensor, shape_fits) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is unknown: use one of {', '.join(IMPLS)}")
    if impl == "torch":
        return "torch"
    if impl == "triton":
        if x.device.type != "cuda" and not _interpreting():
            raise ValueError(f"impl='triton' needs CUDA tensors, got {x.device}: use impl='torch' (or set "
                             f"TRITON_INTERPRET=1 before import to interpret the kernels on the CPU, slowly)")
        if not _triton_installed():
            raise ValueError("impl='triton' needs the triton package: pip install triton, or use impl='torch'")
        return "triton"  # the kernel's own checks raise ValueError for shapes it does not take
    return "triton" if _triton_runs_on(x.device) and shape_fits() else "torch"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes")


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_runs_on(device: torch.device) -> bool:
    if not _triton_installed():
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and INTERPRET_ON_CPU and _interpreting()


def _module(name: str):
    return importlib.import_module(f"adaptive_sarathi.kernels.fused.{name}")


def _norm_module():
    return _module("triton_norm")


__all__ = ["IMPLS", "INTERPRET_ON_CPU", "fused_add_rms_norm", "fused_impl", "rms_norm", "rope_and_write_kv",
           "silu_and_mul"]
