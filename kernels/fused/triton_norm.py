"""RMSNorm and residual-add + RMSNorm as one Triton launch each. Importing this module imports
triton.

One program per row holds the whole row in registers (BLOCK = next power of two >= hidden, the
tail masked), so a row is read once and written once: rms_norm moves 2 * T * H elements,
fused_add_rms_norm 4 * T * H (x, residual in; residual, out back), plus the weight, which stays
in L2. Rows up to MAX_HIDDEN elements; num_warps grows with the row so each thread keeps about 8
to 16 elements, which keeps loads 16 bytes wide in half precision without spilling.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_HIDDEN = 16384  # Llama 3.1 405B's hidden size; larger rows would need a tiled two-pass kernel.


@triton.jit
def _rms_norm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, n_cols, stride_x, stride_residual, stride_out,
                     eps, HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    # int64 row offsets: T * H exceeds 2**31 elements for long prefills of wide models.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_residual + cols, mask=mask, other=0.0)
        # Rounded to the residual's dtype before the norm reads it, as an unfused add then norm.
        x = (residual.to(tl.float32) + x.to(tl.float32)).to(residual_ptr.dtype.element_ty)
        tl.store(residual_ptr + row * stride_residual + cols, x, mask=mask)
    xf = x.to(tl.float32)
    # Masked lanes load 0 and so add nothing to the sum of squares.
    rstd = tl.math.rsqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
    # HF's order: the normalized value is rounded to the activation dtype before the weight multiplies it.
    normed = (xf * rstd).to(out_ptr.dtype.element_ty).to(tl.float32)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (normed * weight).to(out_ptr.dtype.element_ty), mask=mask)


def supports(hidden: int) -> bool:
    """Whether rows of `hidden` elements fit one program."""
    return 1 <= hidden <= MAX_HIDDEN


def _launch(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
            out_dtype: torch.dtype | None) -> torch.Tensor:
    rows = residual if residual is not None else x
    if x.dim() != 2 or weight.shape != (x.shape[1],) or (residual is not None and residual.shape != x.shape):
        raise ValueError(f"expected x [T, H] and weight [H] (and residual like x), got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}" + ("" if residual is None else
                                                           f", residual {tuple(residual.shape)}"))
    t, hidden = x.shape
    if not supports(hidden):
        raise ValueError(f"hidden={hidden} is outside the triton RMSNorm's range 1..{MAX_HIDDEN}: use impl='torch'")
    if residual is not None and residual.stride(-1) != 1:
        raise ValueError(f"residual must have a contiguous last dim (it is updated in place), got strides "
                         f"{residual.stride()}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    weight = weight.contiguous()
    out = torch.empty((t, hidden), dtype=out_dtype or rows.dtype, device=x.device)
    if t == 0:
        return out
    block = triton.next_power_of_2(hidden)
    num_warps = min(max(block // 256, 1), 16)
    _rms_norm_kernel[(t,)](x, residual if residual is not None else x, weight, out, hidden, x.stride(0),
                           rows.stride(0), out.stride(0), float(eps), HAS_RESIDUAL=residual is not None,
                           BLOCK=block, num_warps=num_warps)
    return out


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float,
                    out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Same contract as reference.rms_norm_reference for x [T, H]: returns a new [T, H] tensor in
    out_dtype, default x's (contiguous); nothing is mutated. Raises ValueError for other shapes."""
    return _launch(x, None, weight, eps, out_dtype)


def fused_add_rms_norm_triton(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                              eps: float, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Same contract as reference.fused_add_rms_norm_reference: residual [T, H] (last dim
    contiguous) += x in place, returns a new [T, H] tensor, rms_norm of the updated residual in
    out_dtype (default residual's). Raises ValueError for other shapes."""
    return _launch(x, residual, weight, eps, out_dtype)
