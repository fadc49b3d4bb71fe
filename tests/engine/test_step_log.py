"""The step log: StepStats' host gap and budget reason, the writer, the reader and the format."""

from __future__ import annotations

import json

import pytest
from step_log_cases import run_engine

from adaptive_sarathi.engine.budget import StepBudget
from adaptive_sarathi.engine.latency import StepShape
from adaptive_sarathi.engine.stats import StepStats
from adaptive_sarathi.engine.step_log import FORMAT, StepLogWriter, StepRecord, read_step_log


def test_host_gap_is_the_time_between_steps_and_none_after_idle():
    # Two requests 10 s apart: the second one's first step follows an idle spell.
    steps = run_engine([0.0, 10.0], host_s=0.002)
    assert steps[0].host_gap_s is None
    after_idle = next(i for i, s in enumerate(steps) if s.start_time_s >= 10.0)
    assert steps[after_idle].host_gap_s is None
    busy = [s for i, s in enumerate(steps) if i not in (0, after_idle)]
    assert busy and all(s.host_gap_s == pytest.approx(0.002) for s in busy)


def test_the_budget_reason_reaches_step_stats():
    steps = run_engine([0.0])
    assert [s.budget_reason for s in steps[:4]] == ["odd", "even", "odd", "even"]
    assert [(s.token_budget, s.max_chunk) for s in steps[:2]] == [(32, 16), (48, 48)]


def test_step_budget_refuses_a_reason_that_is_not_text():
    with pytest.raises(ValueError, match="reason=3: use a string"):
        StepBudget(8, reason=3)


def expected_records(steps: list[StepStats]) -> list[StepRecord]:
    """The records the log must hold, periods computed here from consecutive starts."""
    records = []
    for i, s in enumerate(steps):
        following = steps[i + 1] if i + 1 < len(steps) else None
        period = (following.start_time_s - s.start_time_s
                  if following is not None and following.host_gap_s is not None else None)
        records.append(StepRecord.from_stats(s, period))
    return records


def test_the_log_round_trips_with_periods_and_tags(tmp_path):
    path = tmp_path / "run.jsonl"
    tags = {"gpu": "NVIDIA H200", "model": "dummy:llama-3-8b", "kv_capacity_tokens": "3200"}
    with StepLogWriter(path, tags, flush_interval_s=0.01) as writer:
        steps = run_engine([0.0, 0.001, 10.0], host_s=0.003, listeners=[writer])
    log = read_step_log(path)
    assert log.tags == tags
    assert list(log.records) == expected_records(steps)
    periods = [r.period_s for r in log.records]
    # Two periods are unknown: the step before the idle spell and the last one.
    assert sum(p is None for p in periods) == 2 and periods[-1] is None
    # The period is the executor's time plus the host work after it.
    assert all(r.period_s == pytest.approx(r.duration_s + 0.003) for r in log.records if r.period_s is not None)
    assert log.records[0].shape == steps[0].shape and log.records[0].reason == "odd"


def test_the_writer_writes_the_header_at_once_and_the_steps_on_close(tmp_path):
    path = tmp_path / "run.jsonl"
    writer = StepLogWriter(path, {"model": "m"}, flush_interval_s=60.0)
    header = json.loads(path.read_text().splitlines()[0])
    assert header == {"format": FORMAT, "version": 1, "tags": {"model": "m"}}
    steps = run_engine([0.0], listeners=[writer])
    assert len(path.read_text().splitlines()) == 1  # nothing written on the step path
    writer.close()
    writer.close()  # a second close changes nothing
    assert writer.num_written == len(steps) == len(read_step_log(path).records)
    with pytest.raises(FileNotFoundError):
        StepLogWriter(tmp_path / "missing" / "run.jsonl")


def test_the_reader_names_the_line_and_the_fix(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("num_prefill_tokens,duration_s\n")
    with pytest.raises(ValueError, match="line 1: not a step log.*serve --step-log"):
        read_step_log(path)
    path.write_text(json.dumps({"format": FORMAT, "version": 2, "tags": {}}) + "\n")
    with pytest.raises(ValueError, match="version 2 is newer than this reader's 1: upgrade"):
        read_step_log(path)
    record = StepRecord(0, 0.0, 0.01, 0.012, None, StepShape(8, 2, 1, 40, 30), 16, 8).to_dict()
    header = json.dumps({"format": FORMAT, "version": 1, "tags": {}})
    del record["duration_s"]
    path.write_text(header + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="line 2: the key 'duration_s' is missing"):
        read_step_log(path)
    record["duration_s"] = "fast"
    path.write_text(header + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="line 2: duration_s='fast' is not a number"):
        read_step_log(path)


def test_a_last_line_cut_short_is_skipped(tmp_path):
    path = tmp_path / "cut.jsonl"
    record = StepRecord(0, 0.0, 0.01, 0.012, None, StepShape(8, 2, 1, 40, 30), 16, 8, "why")
    line = json.dumps(record.to_dict())
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "tags": {}}) + "\n" + line + "\n" + line[:30])
    assert read_step_log(path).records == (record,)
