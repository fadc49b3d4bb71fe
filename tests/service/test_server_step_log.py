"""serve --step-log: the server on the tiny CPU model writes one line per engine step."""

from __future__ import annotations

import pytest

from adaptive_sarathi.engine.step_log import read_step_log
from adaptive_sarathi.server import ServerArgs


def test_a_served_run_writes_its_steps_with_periods_and_deployment_tags(serve, tmp_path):
    path = tmp_path / "run.jsonl"
    with serve(step_log=str(path)) as server:
        for prompt in ([5, 6, 7, 8] * 30, [9, 10] * 50):  # 120 and 100 tokens: chunks of 64 (TINY's max_chunk)
            status, _, body = server.request("POST", "/v1/completions", {"model": "dummy:tiny", "prompt": prompt,
                                                                          "max_tokens": 6, "ignore_eos": True})
            assert status == 200, body
        num_steps = server.engine.num_steps
    log = read_step_log(path)
    assert log.tags["model"] == "dummy:tiny" and log.tags["gpu"].startswith("cpu")
    assert log.tags["kv_capacity_tokens"] == str(512 * 16) and log.tags["policy"] == "FixedBudget"
    records = log.records
    assert [r.step_index for r in records] == list(range(num_steps))
    # Each request: 2 chunks (64 + the rest, sampling its first token), then 5 decodes.
    assert [r.shape.num_prefill_tokens for r in records] == [64, 56, 0, 0, 0, 0, 0, 64, 36, 0, 0, 0, 0, 0]
    assert all(r.shape.num_decode_tokens == 1 for r in records if not r.shape.num_prefill_tokens)
    assert all((r.token_budget, r.max_chunk) == (128, 64) for r in records)
    # Periods within each request's run of steps; none after its last step (the engine went idle).
    assert [r.period_s is None for r in records] == [False] * 6 + [True] + [False] * 6 + [True]
    for r in records:
        if r.period_s is not None:
            assert r.period_s > r.duration_s > 0
    assert records[0].host_gap_s is None and records[7].host_gap_s is None
    assert all(r.host_gap_s is not None and r.host_gap_s > 0 for i, r in enumerate(records) if i not in (0, 7))


def test_a_step_log_in_a_missing_folder_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="--step-log .*does not exist: create it"):
        ServerArgs(step_log=str(tmp_path / "nowhere" / "run.jsonl"))
