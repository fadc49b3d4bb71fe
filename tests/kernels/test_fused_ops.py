"""The fused elementwise Triton kernels equal their plain-torch references on fresh random inputs,
and the references equal the unfused torch ops they replace.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/kernels/conftest.py
sets TRITON_INTERPRET=1) at small sizes; with a GPU the same cases run on it, and the `gpu` cases
run Llama-3-8B sizes. The interpreter converts fp32 to bf16 by truncation where the GPU rounds to
nearest even, so the `gpu_bf16_rounding` fixture swaps in a round-to-nearest-even conversion while
these tests run on the CPU; with it every dtype is checked for exact rounding, on CPU and GPU.

Tolerances (kernel vs reference, both given the same inputs; TOL below):
  fp32  rtol 1e-5, atol 1e-5: fp32 reduction order and rsqrt/exp approximations only.
  fp16  rtol 2e-3, atol 1e-5 (two fp16 ulps), and at most 1% of elements not bit-equal.
  bf16  rtol 1.6e-2, atol 1e-5 (two bf16 ulps), and at most 1% of elements not bit-equal.
The half-precision bit-equality bound is what pins the rounding order: the same computation with
the weight multiplied before the rounding differs in about a quarter of the elements.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import adaptive_sarathi.kernels.fused as fused
from adaptive_sarathi.kernels.fused import fused_add_rms_norm, rms_norm, rope_and_write_kv, silu_and_mul
from adaptive_sarathi.kernels.fused.reference import (
    fused_add_rms_norm_reference,
    rms_norm_reference,
    rope_and_write_kv_reference,
    silu_and_mul_reference,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=1e-5),
       torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5)}
MAX_MISMATCH = 0.01  # fraction of half-precision elements allowed to differ from the reference by an ulp
EPS = 1e-6


@pytest.fixture(autouse=True)
def gpu_bf16_rounding(monkeypatch):
    """Make the interpreter round fp32 -> bf16 to nearest even, as the GPU does (it truncates).
    Undone after each test, so other test modules see the interpreter unchanged."""
    if DEVICE == "cuda" or not HAS_TRITON:
        return
    import triton.language as tl
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16)
            return interpreter.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), dst_type.scalar)
        return original(self, src, dst_type)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "cast_impl", cast_impl)


def randn(gen: torch.Generator, *shape, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen, device=DEVICE) * scale).to(dtype)


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def assert_matches(out: torch.Tensor, ref: torch.Tensor) -> None:
    """out equals ref within the dtype's tolerance, and in half precision is mostly bit-equal."""
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert not out.isnan().any(), "NaN in the output: an element was not written or the math broke"
    torch.testing.assert_close(out, ref, **TOL[out.dtype])
    if out.dtype != torch.float32:
        mismatch = (out != ref).float().mean().item()
        assert mismatch <= MAX_MISMATCH, f"{mismatch:.1%} of elements differ from the reference's rounding"


# ---------------------------------------------------------------- the Triton kernels vs the references


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,hidden", [(1, 64), (3, 576), (17, 576), (17, 64)])
def test_rms_norm_matches_reference(dtype, tokens, hidden):
    gen = generator(hidden * 100 + tokens)
    # A row view of a wider buffer (row stride != hidden), as a slice of a fused projection would be.
    x = randn(gen, tokens, hidden + 8, dtype=dtype, scale=3.0)[:, :hidden]
    weight = randn(gen, hidden, dtype=dtype, scale=0.3) + 1
    before = x.clone()
    out = rms_norm(x, weight, EPS, impl="triton")
    assert out.is_contiguous()
    assert_matches(out, rms_norm_reference(x, weight, EPS))
    assert torch.equal(x, before), "rms_norm must not modify its input"


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,hidden", [(1, 576), (17, 576), (3, 64)])
def test_fused_add_rms_norm_matches_reference(dtype, tokens, hidden):
    gen = generator(7 + tokens * hidden)
    x = randn(gen, tokens, hidden, dtype=dtype)
    residual = randn(gen, tokens, hidden, dtype=dtype, scale=4.0)
    weight = randn(gen, hidden, dtype=dtype, scale=0.3) + 1
    x_before, ref_residual = x.clone(), residual.clone()
    ref = fused_add_rms_norm_reference(x, ref_residual, weight, EPS)
    out = fused_add_rms_norm(x, residual, weight, EPS, impl="triton")
    assert_matches(out, ref)
    assert_matches(residual, ref_residual)  # updated in place, one rounding of the sum
    assert torch.equal(x, x_before), "x must not be modified"


@needs_triton
def test_fused_add_rms_norm_mixed_dtypes():
    """An fp32 residual stream with bf16 layer outputs: the sum, the norm and out are fp32."""
    gen = generator(11)
    x = randn(gen, 5, 576, dtype=torch.bfloat16)
    residual = randn(gen, 5, 576)
    weight = randn(gen, 576, dtype=torch.bfloat16) + 1
    ref_residual = residual.clone()
    ref = fused_add_rms_norm_reference(x, ref_residual, weight, EPS)
    out = fused_add_rms_norm(x, residual, weight, EPS, impl="triton")
    assert out.dtype == torch.float32
    assert_matches(out, ref)
    assert_matches(residual, ref_residual)


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the interpreter's exp(100)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,inter", [(1, 64), (3, 1536), (17, 100)])
def test_silu_and_mul_matches_reference(dtype, tokens, inter):
    gen = generator(inter + tokens)
    gate_up = randn(gen, tokens, 2 * inter, dtype=dtype, scale=3.0)
    gate_up[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -30.0], dtype=dtype)  # exp overflow must not give NaN
    before = gate_up.clone()
    out = silu_and_mul(gate_up, impl="triton")
    assert out.shape == (tokens, inter) and out.is_contiguous()
    assert_matches(out, silu_and_mul_reference(gate_up))
    assert torch.equal(gate_up, before)


def rope_tables(head_dim: int, max_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin built as engine/model/rope.py builds them (emb = cat(freqs, freqs))."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1).to(DEVICE)
    return emb.cos(), emb.sin()


def rope_case(seed: int, tokens: int, heads: int, kv_heads: int, head_dim: int, block_size: int, dtype,
              num_blocks: int = 12, max_positions: int = 512):
    """(qkv [T, (Hq + 2 Hkv) D], q/k/v views of it, positions, cos, sin, k_cache, v_cache, slots).
    Slots are distinct and random; every third token from the second on is padding (-1); the
    cache's last slot is never a real slot, so a -1 that wrapped around to it would show."""
    gen = generator(seed)
    qkv = randn(gen, tokens, (heads + 2 * kv_heads) * head_dim, dtype=dtype, scale=2.0)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q, k, v = (t.view(tokens, -1, head_dim) for t in (q, k, v))
    positions = torch.randint(0, max_positions, (tokens,), generator=gen, device=DEVICE)
    cos, sin = rope_tables(head_dim, max_positions)
    k_cache = randn(gen, num_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    v_cache = randn(gen, num_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    slots = torch.randperm(num_blocks * block_size - 1, generator=gen, device=DEVICE)[:tokens]
    slots[1::3] = -1
    return qkv, q, k, v, positions, cos, sin, k_cache, v_cache, slots


ROPE_LAYOUTS = [  # heads, kv_heads, head_dim, block_size
    (9, 3, 64, 4),  # SmolLM2-135M's heads: not powers of two
    (4, 2, 128, 16),
    (2, 2, 16, 8),
]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 3, 17])
@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size", ROPE_LAYOUTS)
def test_rope_and_write_kv_matches_reference(dtype, tokens, heads, kv_heads, head_dim, block_size):
    case = rope_case(tokens * 31 + head_dim, tokens, heads, kv_heads, head_dim, block_size, dtype)
    qkv, q, k, v, positions, cos, sin, k_cache, v_cache, slots = case
    qkv_ref, k_cache_ref, v_cache_ref = qkv.clone(), k_cache.clone(), v_cache.clone()
    q_ref, k_ref, v_ref = (t.view(tokens, -1, head_dim) for t in qkv_ref.split(
        [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1))
    k_cache_before, v_cache_before = k_cache.clone(), v_cache.clone()

    assert rope_and_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache, slots, impl="triton") is q
    rope_and_write_kv_reference(q_ref, k_ref, v_ref, positions, cos, sin, k_cache_ref, v_cache_ref, slots)

    q_cols = heads * head_dim
    assert_matches(qkv[:, :q_cols], qkv_ref[:, :q_cols])  # q rotated in place
    assert torch.equal(qkv[:, q_cols:], qkv_ref[:, q_cols:]), "k and v must be left as they were"
    # The written slots match; every other slot (padding rows' -1 included) is bit-for-bit untouched.
    written = torch.zeros(k_cache.shape[0] * block_size, dtype=torch.bool, device=DEVICE)
    written[slots[slots >= 0]] = True
    for cache, ref, before in ((k_cache, k_cache_ref, k_cache_before), (v_cache, v_cache_ref, v_cache_before)):
        flat, flat_ref, flat_before = (c.flatten(0, 1) for c in (cache, ref, before))
        assert_matches(flat[written], flat_ref[written])
        assert torch.equal(flat[~written], flat_before[~written])
    assert torch.equal(v_cache.flatten(0, 1)[written], v_cache_ref.flatten(0, 1)[written]), "v is copied exactly"


@needs_triton
def test_rope_and_write_kv_strided_cache_and_int32_positions():
    """Caches that are views with padded strides (a [.., 2 * Hkv, D] buffer's first half), int32
    positions: the kernel addresses block/offset/head by stride rather than assuming a layout."""
    tokens, heads, kv_heads, head_dim, block_size = 6, 4, 2, 64, 4
    case = rope_case(3, tokens, heads, kv_heads, head_dim, block_size, torch.float16)
    qkv, q, k, v, positions, cos, sin, _, _, slots = case
    gen = generator(4)
    k_buf = randn(gen, 12, block_size, 2 * kv_heads, head_dim, dtype=torch.float16)
    v_buf = randn(gen, 12, block_size, 2 * kv_heads, head_dim, dtype=torch.float16)
    k_cache, v_cache = k_buf[:, :, :kv_heads], v_buf[:, :, kv_heads:]
    k_ref, v_ref, q_ref = k_cache.clone(), v_cache.clone(), q.clone()
    k_buf_before = k_buf.clone()
    rope_and_write_kv(q, k, v, positions.to(torch.int32), cos, sin, k_cache, v_cache, slots, impl="triton")
    rope_and_write_kv_reference(q_ref, k.clone(), v.clone(), positions, cos, sin, k_ref, v_ref, slots)
    assert_matches(q, q_ref)
    assert_matches(k_cache, k_ref)
    assert_matches(v_cache, v_ref)
    assert torch.equal(k_buf[:, :, kv_heads:], k_buf_before[:, :, kv_heads:])


@needs_triton
def test_triton_rejects_what_it_cannot_take():
    x = torch.randn(2, 8, device=DEVICE)
    with pytest.raises(ValueError, match="hidden"):
        rms_norm(torch.randn(2, 40000, device=DEVICE), torch.ones(40000, device=DEVICE), EPS, impl="triton")
    with pytest.raises(ValueError, match="residual"):
        fused_add_rms_norm(x, torch.randn(8, 2, device=DEVICE).t(), torch.ones(8, device=DEVICE), EPS,
                           impl="triton")
    case = rope_case(0, 2, 2, 1, 80, 4, torch.float32)  # head_dim 80: not a power of two
    _, q, k, v, positions, cos, sin, k_cache, v_cache, slots = case
    with pytest.raises(ValueError, match="head_dim=80"):
        rope_and_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache, slots, impl="triton")


# ---------------------------------------------------------------- the dispatcher


@needs_triton
def test_auto_picks_triton_only_where_asked(monkeypatch):
    x = torch.randn(3, 64, device=DEVICE)
    if DEVICE == "cuda":
        assert fused.fused_impl(x) == "triton"
        return
    monkeypatch.setattr(fused, "INTERPRET_ON_CPU", False)
    assert fused.fused_impl(x) == "torch"
    monkeypatch.setattr(fused, "INTERPRET_ON_CPU", True)
    assert fused.fused_impl(x) == "triton"
    # A shape the kernel does not take falls back to the reference under "auto" rather than failing.
    _, q, k, v, positions, cos, sin, k_cache, v_cache, slots = rope_case(1, 3, 2, 1, 80, 4, torch.float32)
    q_ref = q.clone()
    rope_and_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache, slots)
    rope_and_write_kv_reference(q_ref, k, v, positions, cos, sin, k_cache.clone(), v_cache.clone(), slots)
    assert torch.equal(q, q_ref)


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="impl='cuda' is unknown"):
        rms_norm(torch.randn(2, 4), torch.ones(4), EPS, impl="cuda")


def test_import_does_not_load_triton():
    code = ("import sys, torch, adaptive_sarathi.kernels.fused as f; "
            "f.rms_norm(torch.randn(2, 8), torch.ones(8), 1e-6); "
            "assert 'triton' not in sys.modules, 'triton imported'")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the references vs unfused torch ops


@pytest.mark.skipif(DEVICE == "cuda", reason="on a GPU the engine's RMSNorm runs the Triton kernel, which the "
                    "kernel tests hold to the reference within tolerance")
@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_reference_is_the_engines_rmsnorm(dtype):
    from adaptive_sarathi.engine.model.llama import RMSNorm

    gen = generator(21)
    norm = RMSNorm(576, EPS).to(device=DEVICE, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(randn(gen, 576, dtype=dtype) + 1)
        x = randn(gen, 9, 576, dtype=dtype, scale=2.0)
        residual = randn(gen, 9, 576, dtype=dtype)
        assert torch.equal(rms_norm_reference(x, norm.weight, EPS), norm(x))
        # The engine's unfused `h = residual + x; norm(h)`.
        h = residual + x
        assert torch.equal(fused_add_rms_norm_reference(x, residual, norm.weight, EPS), norm(h))
        assert torch.equal(residual, h)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul_reference_vs_the_engines_mlp(dtype):
    """The engine's F.silu(gate) * up rounds twice in half precision; one rounding differs by at
    most an ulp or two of the result."""
    gen = generator(22)
    gate_up = randn(gen, 9, 2 * 96, dtype=dtype, scale=3.0)
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(silu_and_mul_reference(gate_up), F.silu(gate) * up, **TOL[dtype])


def unfused_rope(cos, sin, positions, q, k):
    """Rotary embedding as plain torch ops in q's dtype (Hugging Face's order): cos/sin rounded to
    q's dtype first, each product rounded."""
    c, s = cos[positions].to(q.dtype)[:, None, :], sin[positions].to(q.dtype)[:, None, :]

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * c + rotate_half(q) * s, k * c + rotate_half(k) * s


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_reference_vs_unfused_rope_and_cache_write(dtype):
    """Unfused rotary embedding multiplies in q's dtype after rounding cos/sin to it; the fp32 math
    here is more accurate. Against it: fp32 to 1e-5, half precision to a relative Frobenius error
    of 1e-2 (bf16) / 2e-3 (fp16), a few ulps per element. Padding slots aside, the cache write is
    write_kv_cache's."""
    from adaptive_sarathi.engine.model.config import ModelConfig
    from adaptive_sarathi.engine.model.rope import RotaryEmbedding
    from adaptive_sarathi.kernels.attention import write_kv_cache

    config = ModelConfig(vocab_size=32, hidden_size=576, intermediate_size=1536, num_layers=1, num_heads=9,
                         num_kv_heads=3, head_dim=64, max_position_embeddings=256, rope_theta=100000.0)
    rope = RotaryEmbedding(config, 256).to(DEVICE)
    _, q, k, v, positions, _, _, k_cache, v_cache, _ = rope_case(23, 12, 9, 3, 64, 4, dtype, max_positions=256)
    slots = torch.randperm(k_cache.shape[0] * 4, device=DEVICE)[:12]  # write_kv_cache has no padding rows
    q_engine, k_engine = unfused_rope(rope.cos, rope.sin, positions, q, k)
    k_cache_engine, v_cache_engine = k_cache.clone(), v_cache.clone()
    write_kv_cache(k_engine, v, k_cache_engine, v_cache_engine, slots)
    rope_and_write_kv_reference(q, k, v, positions, rope.cos, rope.sin, k_cache, v_cache, slots)
    limit = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    for ours, theirs in ((q, q_engine), (k_cache, k_cache_engine)):
        err = ((ours.float() - theirs.float()).norm() / theirs.float().norm()).item()
        assert err < limit
    assert torch.equal(v_cache, v_cache_engine)


# ---------------------------------------------------------------- real sizes on the GPU


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [1, 8192])
@pytest.mark.parametrize("hidden", [576, 4096, 8192])
def test_norms_at_model_sizes(tokens, hidden):
    gen = generator(hidden + tokens)
    x = randn(gen, tokens, hidden, dtype=torch.bfloat16, scale=2.0)
    residual = randn(gen, tokens, hidden, dtype=torch.bfloat16, scale=4.0)
    weight = randn(gen, hidden, dtype=torch.bfloat16, scale=0.3) + 1
    assert_matches(rms_norm(x, weight, EPS, impl="triton"), rms_norm_reference(x, weight, EPS))
    ref_residual = residual.clone()
    ref = fused_add_rms_norm_reference(x, ref_residual, weight, EPS)
    assert_matches(fused_add_rms_norm(x, residual, weight, EPS, impl="triton"), ref)
    assert_matches(residual, ref_residual)


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [1, 8192])
@pytest.mark.parametrize("inter", [1536, 14336, 28672])
def test_silu_and_mul_at_model_sizes(tokens, inter):
    gate_up = randn(generator(inter + tokens), tokens, 2 * inter, dtype=torch.bfloat16, scale=3.0)
    assert_matches(silu_and_mul(gate_up, impl="triton"), silu_and_mul_reference(gate_up))


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [1, 64, 8192])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(32, 8, 128), (9, 3, 64), (64, 8, 128)])
def test_rope_and_write_kv_at_model_sizes(tokens, heads, kv_heads, head_dim):
    num_blocks = tokens // 16 + 8
    case = rope_case(tokens + heads, tokens, heads, kv_heads, head_dim, 16, torch.bfloat16,
                     num_blocks=num_blocks, max_positions=8192)
    qkv, q, k, v, positions, cos, sin, k_cache, v_cache, slots = case
    qkv_ref, k_cache_ref, v_cache_ref = qkv.clone(), k_cache.clone(), v_cache.clone()
    q_ref, k_ref, v_ref = (t.view(tokens, -1, head_dim) for t in qkv_ref.split(
        [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1))
    rope_and_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache, slots, impl="triton")
    rope_and_write_kv_reference(q_ref, k_ref, v_ref, positions, cos, sin, k_cache_ref, v_cache_ref, slots)
    assert_matches(qkv, qkv_ref)
    assert_matches(k_cache, k_cache_ref)
    assert torch.equal(v_cache, v_cache_ref)
