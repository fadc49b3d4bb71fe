"""Instantiate a model for a resolved source on a device, with real or random weights."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from adaptive_sarathi.engine.loaders import ModelSource, iter_safetensors
from adaptive_sarathi.engine.model.llama import LlamaForCausalLM

if TYPE_CHECKING:
    from adaptive_sarathi.engine.distributed.group import TensorParallelGroup
    from adaptive_sarathi.engine.distributed.sharding import ShardSpec


def build_model(source: ModelSource, device: torch.device, dtype: torch.dtype,
                max_positions: int | None = None, tp: "TensorParallelGroup | None" = None) -> LlamaForCausalLM:
    """Create the model directly on `device` in `dtype` (never a full float32 copy on the host),
    then load the source's weights or draw seeded random ones. Returns it in eval mode.

    With `tp` (an initialized tensor-parallel group of size > 1) the result is this rank's
    TensorParallelLlama, holding exactly the slices of the weights the unsharded model would get
    (random weights included); every rank of the group must call this."""
    if tp is not None and tp.size > 1:
        from adaptive_sarathi.engine.distributed.tp_model import TensorParallelLlama

        with _default_dtype(dtype), torch.device(device):
            model = TensorParallelLlama(source.config, tp, max_positions)
        shard = model.shard
    else:
        with _default_dtype(dtype), torch.device(device):
            model = LlamaForCausalLM(source.config, max_positions)
        shard = None
    if source.weights_path is not None:
        model.load_hf_weights(iter_safetensors(source.weights_path))
    else:
        init_random_weights(model, seed=source.dummy_seed or 0, shard=shard)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def init_random_weights(model: LlamaForCausalLM, seed: int, shard: "ShardSpec | None" = None) -> None:
    """Seeded N(0, 0.02) matrices and unit norms: activations stay in a realistic range, so timing
    and numerics of dummy models resemble trained ones. Mutates the model's parameters.

    With `shard`, each matrix is drawn at its full unsharded shape from the same generator, in the
    same order, and the rank keeps its slice: tensor-parallel ranks hold exactly the values of the
    unsharded model (one full matrix at a time is the extra memory this costs)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("layernorm.weight") or name == "norm.weight":
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        elif shard is None:
            param.normal_(0.0, 0.02, generator=gen)
        else:
            full = torch.empty(shard.full_shape(name, param), dtype=param.dtype, device=param.device)
            param.copy_(shard.shard_param(name, full.normal_(0.0, 0.02, generator=gen)))


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
