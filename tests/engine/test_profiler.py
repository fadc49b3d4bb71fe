"""The step profiler on dummy:tiny (CPU): shapes, synthetic batches, the CSV it writes, the bench smoke."""

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptive_sarathi.cli import main
from adaptive_sarathi.engine.input_prep import prepare_inputs
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.model.build import build_model
from adaptive_sarathi.engine.profiling import profiler
from adaptive_sarathi.engine.profiling.kv_pool import KvPool
from adaptive_sarathi.engine.profiling.profile_shapes import ProfileShape, profile_grid
from adaptive_sarathi.engine.profiling.profiler import EXTRA_COLUMNS, ProfileConfig, run_profile
from adaptive_sarathi.engine.profiling.step_cost import kv_bytes_per_token, layer_matmul_params, step_cost, weight_bytes
from adaptive_sarathi.engine.profiling.synthetic_batch import synthetic_batch
from adaptive_sarathi.kernels.attention.backends import select_attention

REPO = Path(__file__).resolve().parents[2]
PROFILE_COLUMNS = ("num_prefill_tokens", "num_decode_tokens", "num_prefill_seqs", "sum_context_tokens", "duration_s")
SHAPES = [
    ProfileShape(prefill_chunks=((8, 0),)),
    ProfileShape(prefill_chunks=((24, 0),)),
    ProfileShape(num_decodes=3, decode_context_len=40),
    ProfileShape(prefill_chunks=((16, 32),)),
    ProfileShape(num_decodes=2, decode_context_len=20, prefill_chunks=((10, 0), (6, 5))),
]


def read_profile(path: Path) -> tuple[dict[str, str], list[str], list[dict[str, str]]]:
    lines = path.read_text().splitlines()
    tags = dict(line[1:].split(":", 1) for line in lines if line.startswith("#"))
    body = [line for line in lines if not line.startswith("#")]
    reader = csv.DictReader(body)
    return {k.strip(): v.strip() for k, v in tags.items()}, list(reader.fieldnames), list(reader)


def tiny_config(tmp_path: Path, **kw) -> ProfileConfig:
    return ProfileConfig(model="dummy:tiny", device="cpu", out=str(tmp_path / "profile.csv"), repeats=2, warmup=1,
                         **kw)


def test_profile_writes_tagged_csv_with_positive_durations(tmp_path):
    summary = run_profile(tiny_config(tmp_path, device_warmup_s=0.05), SHAPES, progress=False)
    assert summary.num_rows == len(SHAPES) and not summary.skipped
    tags, header, rows = read_profile(summary.path)
    for key in ("gpu", "model", "dtype", "torch", "triton", "date", "attention", "block_size", "statistic"):
        assert tags[key], key
    assert tags["model"] == "dummy:tiny" and tags["dtype"] == "float32" and tags["torch"] == torch.__version__
    assert header == list(PROFILE_COLUMNS + EXTRA_COLUMNS)
    measured = {tuple(int(r[c]) for c in PROFILE_COLUMNS[:4]) for r in rows}
    expected = {tuple(vars(s.step_shape()).values())[:4] for s in SHAPES}
    assert measured == expected
    assert all(float(r["duration_s"]) > 0 and float(r["device_duration_s"]) > 0 for r in rows)


def test_profile_loads_in_the_simulators_latency_model(tmp_path):
    latency = pytest.importorskip("adaptive_sarathi.engine.latency.profile")
    summary = run_profile(tiny_config(tmp_path), SHAPES, progress=False)
    model = latency.load_profile(summary.path)
    assert len(model.rows) == len(SHAPES)
    assert model.tags["model"] == "dummy:tiny"
    # Five shapes over four prefill-token knots leave the fit exact: at every profiled shape the model
    # must give back the duration measured there, which holds only if each column landed in its field.
    rows = read_profile(summary.path)[2]
    measured = {tuple(int(r[c]) for c in PROFILE_COLUMNS[:4]): float(r["duration_s"]) for r in rows}
    for shape in SHAPES:
        step = shape.step_shape()
        assert model.step_time(step) == pytest.approx(measured[tuple(vars(step).values())[:4]], rel=1e-6, abs=1e-9)


def test_shapes_beyond_the_window_or_the_kv_capacity_are_skipped(tmp_path):
    too_long = ProfileShape(prefill_chunks=((8, 4096),))  # dummy:tiny has 2048 positions
    too_big = ProfileShape(num_decodes=64, decode_context_len=1024)  # 4096 blocks of 16 tokens
    # Room for 1024 blocks: tiny's KV block is 2 x 2 layers x 16 tokens x 2 heads x 16 dims x 4 bytes.
    config = tiny_config(tmp_path, cpu_kv_cache_bytes=1024 * 8192)
    summary = run_profile(config, SHAPES[:2] + [too_long, too_big], progress=False)
    assert summary.num_rows == 2
    reasons = {shape: reason for shape, reason in summary.skipped}
    assert "context" in reasons[too_long] and "KV cache" in reasons[too_big]


def test_a_shape_that_runs_out_of_memory_is_retried_on_a_smaller_cache(tmp_path, monkeypatch):
    real = profiler._time_shape
    calls = []

    def second_shape_fails_once(pool, shape, needed, *args):
        calls.append(pool.num_blocks)
        if len(calls) == 2:  # grows the cache (to twice the first shape's), then runs out of memory
            pool.runner(needed)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(pool, shape, needed, *args)

    monkeypatch.setattr(profiler, "_time_shape", second_shape_fails_once)
    first = ProfileShape(num_decodes=4, decode_context_len=64)  # 16 blocks
    second = ProfileShape(num_decodes=4, decode_context_len=65)  # 20 blocks: the cache doubles to 32
    summary = run_profile(tiny_config(tmp_path), [first, second], progress=False)
    assert summary.num_rows == 2 and not summary.skipped
    assert calls == [0, 16, 20]  # the retry ran on a cache of just the blocks the shape needs


@pytest.mark.slow
def test_profile_cli_writes_the_grid_it_names(tmp_path, monkeypatch, capsys):
    # A small stand-in for the quick grid keeps the test fast; the grids are checked below.
    monkeypatch.setattr(profiler, "profile_grid", lambda name: SHAPES + [ProfileShape(prefill_chunks=((4096, 0),))])
    out = tmp_path / "quick.csv"
    assert main(["profile", "--model", "dummy:tiny", "--device", "cpu", "--out", str(out), "--grid", "quick",
                 "--repeats", "1", "--no-progress"]) == 0
    tags, _, rows = read_profile(out)
    assert tags["grid"] == "quick" and len(rows) == len(SHAPES)
    assert "skipped 1 shapes" in capsys.readouterr().err  # beyond tiny's 2048 positions


def test_profile_cli_rejects_a_bad_model(tmp_path, capsys):
    assert main(["profile", "--model", "dummy:nope", "--device", "cpu", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown dummy architecture" in capsys.readouterr().err


def test_grids_cover_the_shapes_the_simulator_needs():
    for name in ("quick", "full"):
        grid = profile_grid(name)
        assert len(grid) == len(set(grid))
        prefill_only = {s.prefill_chunks[0][0] for s in grid
                        if not s.num_decodes and len(s.prefill_chunks) == 1 and not s.prefix_tokens}
        assert {1, 512, 520, 1024, 1040, 2048, 2064, 8192} <= prefill_only
        decodes = {(s.num_decodes, s.decode_context_len) for s in grid if not s.prefill_chunks}
        assert {(1, 512), (256, 512), (1, 8192)} <= decodes
        assert max(s.prefix_tokens for s in grid) == 4096
        assert any(s.num_decodes and s.prefill_chunks for s in grid)
        assert any(len(s.prefill_chunks) > 1 for s in grid)
    assert len(profile_grid("full")) > 2 * len(profile_grid("quick"))
    with pytest.raises(ValueError, match="grid"):
        profile_grid("huge")


def test_synthetic_batch_has_the_shape_and_disjoint_blocks():
    shape = ProfileShape(num_decodes=3, decode_context_len=33, prefill_chunks=((20, 16), (5, 0)))
    assert shape.num_blocks(16) == 3 * 3 + 3 + 1
    ids = random.Random(0).sample(range(100), shape.num_blocks(16))
    batch = synthetic_batch(shape, ids, 16, vocab_size=50, rng=random.Random(0))
    assert StepShape.from_batch(batch) == shape.step_shape() == StepShape(25, 3, 2, 3 * 33 + 36 + 5, 3 * 33)
    tables = [b for c in batch.chunks for b in c.block_table]
    assert sorted(tables) == sorted(ids)
    assert all(0 <= t < 50 for c in batch.chunks for t in c.token_ids)
    inputs = prepare_inputs(batch, 16)  # the engine's own input preparation accepts it
    assert inputs.num_tokens == 28 and len(inputs.sample_chunks) == 5
    with pytest.raises(ValueError, match="needs 13 KV blocks"):
        synthetic_batch(shape, ids[:-1], 16, 50, random.Random(0))


def test_kv_pool_grows_by_doubling_within_capacity_and_never_holds_zeros():
    source = resolve_model("dummy:tiny")
    model = build_model(source, torch.device("cpu"), torch.float32, max_positions=64)
    pool = KvPool(model, select_attention(torch.device("cpu")), block_size=16, capacity_blocks=30)
    assert pool.runner(10).num_blocks == 10
    assert pool.runner(8).num_blocks == 10  # big enough: kept
    assert pool.runner(11).num_blocks == 20
    assert pool.runner(21).num_blocks == 30  # doubling stops at capacity
    assert all((k != 0).all() and (v != 0).all() for k, v in pool.current.kv_caches)
    with pytest.raises(ValueError, match="capacity"):
        pool.runner(31)


def test_step_cost_counts_weights_kv_and_flops():
    config = resolve_model("dummy:tiny").config
    kv = kv_bytes_per_token(config, 2)
    assert kv == 2 * 2 * 2 * 16 * 2
    decode = step_cost(config, ProfileShape(num_decodes=4, decode_context_len=100), 2)
    assert decode.bytes == weight_bytes(config, 2) + kv * (4 * 100 + 4)
    chunk = step_cost(config, ProfileShape(prefill_chunks=((10, 6),)), 2)
    linear = 2 * config.num_layers * layer_matmul_params(config) * 10
    head = 2 * config.vocab_size * config.hidden_size
    attention = 4 * config.num_layers * config.num_heads * config.head_dim * (10 * 6 + 55)
    assert chunk.flops == linear + head + attention
    assert chunk.floor_s(bandwidth=1e9, matmul_flops=1e12) == max(chunk.bytes / 1e9, chunk.flops / 1e12)


@pytest.mark.slow
def test_gpu_step_bench_smoke_runs(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "gpu_step_bench.py"), "--smoke",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_step_bench_smoke.json").read_text())
    assert not data["errors"], data["errors"]
    assert {"floors", "decode", "prefill", "mixed", "engine"} <= set(data["sections"])
    assert data["meta"]["card"] and data["meta"]["torch"] == torch.__version__
    assert data["sections"]["engine"]["forward_s"] > 0
    assert (tmp_path / "gpu_step_bench_smoke.md").read_text().count("\n| ") > 10
