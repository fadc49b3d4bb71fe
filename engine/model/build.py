"""Instantiate a model for a resolved source on a device, with real or random weights."""

from __future__ import annotations

import contextlib

import torch

from adaptive_sarathi.engine.loaders import ModelSource, iter_safetensors
from adaptive_sarathi.engine.model.llama import LlamaForCausalLM


def build_model(source: ModelSource, device: torch.device, dtype: torch.dtype,
                max_positions: int | None = None) -> LlamaForCausalLM:
    """Create the model directly on `device` in `dtype` (never a full float32 copy on the host),
    then load the source's weights or draw seeded random ones. Returns it in eval mode."""
    with _default_dtype(dtype), torch.device(device):
        model = LlamaForCausalLM(source.config, max_positions)
    if source.weights_path is not None:
        model.load_hf_weights(iter_safetensors(source.weights_path))
    else:
        init_random_weights(model, seed=source.dummy_seed or 0)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def init_random_weights(model: LlamaForCausalLM, seed: int) -> None:
    """Seeded N(0, 0.02) matrices and unit norms: activations stay in a realistic range, so timing
    and numerics of dummy models resemble trained ones. Mutates the model's parameters."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("layernorm.weight") or name == "norm.weight":
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            param.normal_(0.0, 0.02, generator=gen)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
