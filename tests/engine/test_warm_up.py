"""ModelRunner.warm_up runs its steps through the scratch block alone: no request's K/V changes."""

import torch

from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.model.build import build_model
from adaptive_sarathi.engine.model_runner import ModelRunner
from adaptive_sarathi.kernels.attention import paged_attention_reference


def test_warm_up_writes_only_the_scratch_block():
    model = build_model(resolve_model("dummy:tiny"), torch.device("cpu"), torch.float32)
    runner = ModelRunner(model, num_blocks=8, block_size=16, attention=paged_attention_reference)
    gen = torch.Generator().manual_seed(0)
    for k, v in runner.kv_caches:
        k.copy_(torch.randn(k.shape, generator=gen))
        v.copy_(torch.randn(v.shape, generator=gen))
    before = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
    runner.warm_up(max_context_len=200)
    scratch = runner.num_blocks
    for (k, v), (k0, v0) in zip(runner.kv_caches, before):
        assert torch.equal(k[:scratch], k0[:scratch]) and torch.equal(v[:scratch], v0[:scratch])
        assert not torch.equal(k[scratch], k0[scratch])  # the steps did run, through the scratch block
