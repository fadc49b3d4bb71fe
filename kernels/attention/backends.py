"""Choosing the attention implementation for a device.

Backends (all take q [T, heads, head_dim], the paged caches, AttentionMetadata and the softmax
scale, and return a new [T, heads, head_dim] tensor):
  "torch"      plain-torch reference; any device.
  "triton"     this package's Triton kernels; a CUDA device (or CPU tensors under
               TRITON_INTERPRET=1, slowly, for tests).
  "flash_attn" flash-attn 2's paged varlen kernel; CUDA, block_size a multiple of 256 (untested here).
  "auto"       "triton" on a CUDA device of compute capability 8.0 or newer when triton imports,
               else "torch". It never picks flash_attn: that backend is unverified here and its
               page-size rule does not fit the default block_size of 16; ask for it by name.
Nothing here imports triton or flash_attn until a backend that needs it is selected.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from adaptive_sarathi.kernels.attention.reference import paged_attention_reference

ATTENTION_BACKENDS = ("auto", "torch", "triton", "flash_attn")


def select_attention(device: torch.device, name: str = "auto"):
    """The attention function for `device`. Raises ValueError naming the backend, why it is
    unusable here and the fix, when `name` is unknown or cannot run on `device`."""
    device = torch.device(device)
    name = resolve_backend_name(device, name)
    if name == "torch":
        return paged_attention_reference
    if name == "triton":
        return _triton_backend(device)
    return _flash_attn_backend(device)


def resolve_backend_name(device: torch.device, name: str = "auto") -> str:
    """The backend `name` stands for on `device` ("auto" resolved). Raises ValueError for an
    unknown name."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend={name!r} is unknown: use one of {', '.join(ATTENTION_BACKENDS)}")
    if name == "auto":
        return "triton" if _triton_fits(torch.device(device)) else "torch"
    return name


def _triton_fits(device: torch.device) -> bool:
    return (device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
            and importlib.util.find_spec("triton") is not None)


def _triton_backend(device: torch.device):
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "").lower() not in ("1", "true", "on", "yes"):
        raise ValueError(f"attention_backend='triton' needs a CUDA device, got {device}: use attention_backend="
                         f"'torch' (or set TRITON_INTERPRET=1 to interpret the kernels on the CPU, slowly)")
    try:
        from adaptive_sarathi.kernels.attention.triton_backend import triton_paged_attention
    except ImportError as e:
        raise ValueError(f"attention_backend='triton' needs the triton package ({e}): pip install triton, "
                         f"or use attention_backend='torch'") from e
    return triton_paged_attention


def _flash_attn_backend(device: torch.device):
    if device.type != "cuda":
        raise ValueError(f"attention_backend='flash_attn' needs a CUDA device, got {device}: use 'torch' or 'auto'")
    if importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attention_backend='flash_attn' needs the flash-attn package: pip install flash-attn "
                         "--no-build-isolation, or use attention_backend='auto'")
    from adaptive_sarathi.kernels.attention.flash_attn_backend import flash_attn_paged_attention

    return flash_attn_paged_attention
