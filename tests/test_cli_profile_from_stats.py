"""`adaptive-sarathi profile --from-stats`: a profile CSV fitted from a step log, and its errors."""

from __future__ import annotations

import json
import random

import pytest

from adaptive_sarathi.cli import main
from adaptive_sarathi.engine.latency import LinearLatencyModel, StepShape, load_profile
from adaptive_sarathi.engine.step_log import FORMAT, VERSION, StepRecord

# A known linear truth: intercept, per prefill token, per decode, per chunk, per context token.
TRUTH = LinearLatencyModel((0.003, 1.5e-5, 6e-5, 4e-4, 3e-8))
HOST_S = 0.0012  # host work between steps: the period is the executor's time plus this


def shape(rng: random.Random) -> StepShape:
    decodes = rng.randint(0, 48)
    decode_context = sum(rng.randint(10, 3000) for _ in range(decodes))
    if decodes and rng.random() < 0.5:
        return StepShape(0, decodes, 0, decode_context, decode_context)
    chunk = rng.randint(1, 400)
    prefix = rng.choice([0, rng.randint(1, 5000)])
    return StepShape(chunk, decodes, 1, decode_context + prefix + chunk, decode_context)


@pytest.fixture
def step_log(tmp_path):
    rng = random.Random(0)
    lines = [json.dumps({"format": FORMAT, "version": VERSION,
                         "tags": {"gpu": "NVIDIA H200", "model": "dummy:llama-3-8b", "kv_capacity_tokens": "160000"}})]
    start = 0.0
    for i in range(300):
        s = shape(rng)
        executor = TRUTH.step_time(s)
        period = executor + HOST_S if i % 50 != 49 else None  # every 50th step is followed by idle time
        lines.append(json.dumps(StepRecord(i, start, executor, period, None if i % 50 == 0 else HOST_S, s, 512, 256,
                                           "fixed").to_dict()))
        start += executor + HOST_S + (0.0 if period is not None else 5.0)
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_from_stats_recovers_a_linear_truth_and_tags_the_profile(tmp_path, step_log, capsys):
    out = tmp_path / "profile.csv"
    assert main(["profile", "--from-stats", str(step_log), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 294 steps (period)" in printed and "left out 6 steps without a period" in printed
    assert "fit error, fitted steps: decode-only median 0.000 p90 0.000" in printed
    model = load_profile(out)
    rng = random.Random(1)
    for s in (shape(rng) for _ in range(200)):  # steps the log never had
        assert model.step_time(s) == pytest.approx(TRUTH.step_time(s) + HOST_S, rel=1e-6)
    tags = model.tags
    assert tags["gpu"] == "NVIDIA H200" and tags["model"] == "dummy:llama-3-8b"
    assert tags["kv_capacity_tokens"] == "160000" and tags["form"] == "token-knots"
    assert tags["source"] == f"step-log {step_log}" and tags["steps"].startswith("294 of the log's 300")
    assert tags["duration"].startswith("period")
    assert "decode-only median 0.000" in tags["fit_error"] and "mixed median 0.000" in tags["holdout_error"]


def test_from_stats_can_fit_the_executor_time_alone(tmp_path, step_log):
    out = tmp_path / "profile.csv"
    assert main(["profile", "--from-stats", str(step_log), "--out", str(out), "--fit-duration", "executor"]) == 0
    model = load_profile(out)
    assert len(model.rows) == 300 and model.tags["duration"].startswith("executor")
    s = StepShape(128, 16, 1, 16 * 900 + 2000, 16 * 900)
    assert model.step_time(s) == pytest.approx(TRUTH.step_time(s), rel=1e-6)


def test_from_stats_errors_name_the_file_and_the_fix(tmp_path, capsys):
    assert main(["profile", "--from-stats", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "no such file (record one with serve --step-log)" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    assert main(["profile", "--from-stats", str(bad), "--out", str(tmp_path / "p.csv")]) == 2
    assert "not a step log" in capsys.readouterr().err
