"""Choosing the attention implementation for a device."""

from __future__ import annotations

import torch

from adaptive_sarathi.kernels.attention.reference import paged_attention_reference

ATTENTION_BACKENDS = ("auto", "torch")


def select_attention(device: torch.device, name: str = "auto"):
    """The attention function for `device`. "auto" picks the fastest available one; raises
    ValueError naming the backend and the choices when it is unknown or unusable here."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend={name!r} is unknown: use one of {', '.join(ATTENTION_BACKENDS)}")
    return paged_attention_reference
