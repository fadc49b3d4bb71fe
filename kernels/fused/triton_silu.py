"""SiLU-and-mul of the MLP's fused gate/up projection as one Triton launch. Importing this module
imports triton.

A 2-D grid: rows (tokens) on axis 0, which has no practical limit, and column tiles of BLOCK on
axis 1 (at most 65535 tiles, far beyond any intermediate size). Each program reads BLOCK gate and
BLOCK up elements and writes BLOCK outputs; 1024 elements over 4 warps gives every thread 8
contiguous elements, one 16-byte access per operand in bf16/fp16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _silu_and_mul_kernel(gate_up_ptr, out_ptr, n_cols, stride_in, stride_out, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    row_in = gate_up_ptr + row * stride_in
    gate = tl.load(row_in + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(row_in + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    # silu(g) = g * sigmoid(g) = g / (1 + exp(-g)); for g -> -inf, exp overflows to inf and the
    # quotient is -0, the limit, rather than NaN.
    out = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul_triton(gate_up: torch.Tensor) -> torch.Tensor:
    """Same contract as reference.silu_and_mul_reference for gate_up [T, 2I]: returns a new
    contiguous [T, I] tensor in gate_up's dtype; nothing is mutated. Raises ValueError for other
    shapes."""
    if gate_up.dim() != 2 or gate_up.shape[1] % 2:
        raise ValueError(f"expected gate_up [T, 2 * intermediate], got {tuple(gate_up.shape)}")
    if gate_up.stride(-1) != 1:
        gate_up = gate_up.contiguous()
    t, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((t, inter), dtype=gate_up.dtype, device=gate_up.device)
    if t == 0 or inter == 0:
        return out
    block = min(BLOCK, triton.next_power_of_2(inter))
    _silu_and_mul_kernel[(t, triton.cdiv(inter, block))](gate_up, out, inter, gate_up.stride(0), out.stride(0),
                                                          BLOCK=block, num_warps=NUM_WARPS)
    return out
