"""The step log: one JSON line per engine step of a run, what latency profiles are refitted from.

File format (JSON Lines, UTF-8), version 1:

    {"format": "adaptive-sarathi-step-log", "version": 1, "tags": {"gpu": "NVIDIA H200", ...}}
    {"step_index": 0, "start_time_s": 12.5, "duration_s": 0.0061, "period_s": 0.0075, ...}
    ...

The first line is the header: the format name, its version and free-form string tags (GPU,
model, dtype, KV capacity: whatever the writer was told). Every other line is one StepRecord with
its shape flattened (StepShape's field names), in step order. `period_s` is the time from the
step's start to the next step's start while the engine had work in between (host work included:
what the token rhythm pays); null when the engine went idle after the step, and for the last
step of the log. Readers ignore keys they do not know, so later versions may add keys; a new
version number means a change old readers cannot read.

This module owns the format: StepLogWriter writes it, read_step_log reads it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from adaptive_sarathi.engine.latency.hardware import device_name
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.stats import StepStats

if TYPE_CHECKING:  # engine.engine loads torch (through the executor); reading a log must not
    from adaptive_sarathi.engine.engine import LLMEngine

FORMAT = "adaptive-sarathi-step-log"
VERSION = 1
SHAPE_KEYS = ("num_prefill_tokens", "num_decode_tokens", "num_prefill_seqs", "sum_context_tokens",
              "decode_context_tokens")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepRecord:
    """One line of the log. Seconds on the engine clock; duration_s is the executor's time,
    period_s the start-to-next-start time (None: unknown, the engine went idle or the log ended),
    host_gap_s as in StepStats; token_budget and max_chunk are the limits the step ran under and
    reason the policy's words for them."""

    step_index: int
    start_time_s: float
    duration_s: float
    period_s: float | None
    host_gap_s: float | None
    shape: StepShape
    token_budget: int
    max_chunk: int
    reason: str = ""
    num_waiting: int = 0
    num_running: int = 0
    num_preempted: int = 0

    @classmethod
    def from_stats(cls, stats: StepStats, period_s: float | None) -> "StepRecord":
        return cls(stats.step_index, stats.start_time_s, stats.duration_s, period_s, stats.host_gap_s, stats.shape,
                   stats.token_budget, stats.max_chunk, stats.budget_reason, stats.num_waiting, stats.num_running,
                   stats.num_preempted)

    def to_dict(self) -> dict:
        """The record as the JSON object of its line (a fresh dict)."""
        s = self.shape
        return {"step_index": self.step_index, "start_time_s": self.start_time_s, "duration_s": self.duration_s,
                "period_s": self.period_s, "host_gap_s": self.host_gap_s,
                "num_prefill_tokens": s.num_prefill_tokens, "num_decode_tokens": s.num_decode_tokens,
                "num_prefill_seqs": s.num_prefill_seqs, "sum_context_tokens": s.sum_context_tokens,
                "decode_context_tokens": s.decode_context_tokens, "token_budget": self.token_budget,
                "max_chunk": self.max_chunk, "reason": self.reason, "num_waiting": self.num_waiting,
                "num_running": self.num_running, "num_preempted": self.num_preempted,
                "num_cached_tokens": s.num_cached_tokens}

    @classmethod
    def from_dict(cls, data: dict) -> "StepRecord":
        """The record of one parsed line. Raises KeyError naming a missing key, TypeError or
        ValueError for a value of the wrong kind."""
        def number(key: str, kind=float, optional: bool = False):
            value = data[key]
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                raise ValueError(f"{key}={value!r} is not {'a number' if kind is float else 'an integer'}")
            return kind(value)

        shape = StepShape(*(number(k, int) for k in SHAPE_KEYS), int(data.get("num_cached_tokens", 0)))
        reason = data.get("reason", "")
        if not isinstance(reason, str):
            raise ValueError(f"reason={reason!r} is not a string")
        return cls(number("step_index", int), number("start_time_s"), number("duration_s"),
                   number("period_s", optional=True), number("host_gap_s", optional=True), shape,
                   number("token_budget", int), number("max_chunk", int), reason,
                   *(int(data.get(k, 0)) for k in ("num_waiting", "num_running", "num_preempted")))


@dataclass(frozen=True)
class StepLog:
    """A whole log: the header's tags and the records in file order."""

    tags: dict[str, str]
    records: tuple[StepRecord, ...] = field(default=())


def read_step_log(path: Path | str) -> StepLog:
    """Read a step log. A last line cut short (a writer killed mid-line) is skipped. Raises
    FileNotFoundError, and ValueError naming the file, the line and the fix for anything else
    that is not this format."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    cut_short = not text.endswith("\n")
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} line 1: not a step log (its first line must be the {FORMAT} header): record one "
                         "with `adaptive-sarathi serve --step-log PATH`")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{path}: step-log version {version!r} is newer than this reader's {VERSION}: "
                         "upgrade adaptive-sarathi to read it")
    tags = {str(k): str(v) for k, v in (header.get("tags") or {}).items()}
    records = []
    body = lines[1:]
    for offset, line in enumerate(body):
        if not line.strip():
            continue
        line_no = offset + 2
        try:
            records.append(StepRecord.from_dict(json.loads(line)))
        except KeyError as err:
            raise ValueError(f"{path} line {line_no}: the key {err} is missing: every step line needs the keys of "
                             "StepRecord") from None
        except (TypeError, ValueError) as err:
            if cut_short and offset == len(body) - 1:
                break  # the writer was stopped in the middle of this line
            raise ValueError(f"{path} line {line_no}: {err}: is this file a step log?") from None
    return StepLog(tags, tuple(records))


class StepLogWriter:
    """A StepStats listener that writes the step log of a run: append it to
    `LLMEngine.stats_listeners` (StepStats must come in step order), close() when the run ends.

    Calling it only queues the stats; a background thread turns them into lines and writes them
    every `flush_interval_s`, so the engine loop does no I/O or encoding. The constructor writes
    the header at once (creating or overwriting `path`), so a bad path raises OSError before any
    step runs. A write that fails later is logged, and the writer drops what comes after (the
    engine carries on); `error` holds the exception. close() writes what is queued, the last
    step with period_s None, and closes the file; it may be called more than once.
    """

    def __init__(self, path: Path | str, tags: dict[str, str] | None = None, flush_interval_s: float = 0.5):
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s={flush_interval_s!r} is invalid: use seconds > 0")
        self.path = Path(path)
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.flush_interval_s = flush_interval_s
        self.error: BaseException | None = None
        self.num_written = 0
        self._file = self.path.open("w", encoding="utf-8")
        self._file.write(json.dumps({"format": FORMAT, "version": VERSION, "tags": self.tags}) + "\n")
        self._file.flush()
        self._pending: collections.deque[StepStats] = collections.deque()  # append/popleft are thread-safe
        self._previous: StepStats | None = None  # written once the next step tells its period
        self._accepting = True
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one drain at a time: the thread's or close()'s
        self._thread = threading.Thread(target=self._run, name="step-log", daemon=True)
        self._thread.start()

    def __call__(self, stats: StepStats) -> None:
        if self._accepting:
            self._pending.append(stats)

    def __enter__(self) -> "StepLogWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file.closed:
            return
        self._accepting = False
        self._stop.set()
        self._thread.join()
        if self.error is None:
            self._drain(final=True)
        self._file.close()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self._drain(final=False)
            if self.error is not None:
                return

    def _drain(self, final: bool) -> None:
        with self._lock:
            lines = []
            previous = self._previous
            while self._pending:
                stats = self._pending.popleft()
                if previous is not None:
                    lines.append(self._line(previous, stats))
                previous = stats
            if final and previous is not None:
                lines.append(json.dumps(StepRecord.from_stats(previous, None).to_dict()))
                previous = None
            self._previous = previous
            if not lines:
                return
            try:
                self._file.write("\n".join(lines) + "\n")
                self._file.flush()
            except Exception as err:  # a full disk must not stop the engine: report it, write no more
                logger.exception("writing the step log %s failed; no more steps are logged", self.path)
                self.error = err
                self._accepting = False
                self._pending.clear()
                return
            self.num_written += len(lines)

    @staticmethod
    def _line(stats: StepStats, following: StepStats) -> str:
        return json.dumps(StepRecord.from_stats(stats, step_period_s(stats, following)).to_dict())


def step_period_s(stats: StepStats, following: StepStats | None) -> float | None:
    """The period of the step `stats`: from its start to the start of `following` (the step after
    it), or None when there is no following step, when `following` is not the next step, or when
    the engine went idle in between (following.host_gap_s None)."""
    if following is None or following.step_index != stats.step_index + 1 or following.host_gap_s is None:
        return None
    return following.start_time_s - stats.start_time_s


def records_from_stats(stats: Sequence[StepStats]) -> tuple[StepRecord, ...]:
    """The step log's records of consecutive `stats` (in step order, not mutated), periods as the
    writer gives them; the last step has none."""
    following = list(stats[1:]) + [None]
    return tuple(StepRecord.from_stats(s, step_period_s(s, n)) for s, n in zip(stats, following))


def deployment_tags(engine: LLMEngine, model_name: str) -> dict[str, str]:
    """Header tags describing what `engine` runs, under the names latency-profile tags use (gpu,
    model, dtype, block_size, kv_capacity_tokens, tensor_parallel_size), plus the policy, the
    torch version and the date. Reads the engine, changes nothing."""
    import torch

    executor = engine.executor
    tags = {"model": model_name}
    runner = getattr(executor, "runner", None)
    if runner is not None:  # a model executor (one GPU or the driver of a tensor-parallel group)
        tags["gpu"] = device_name(runner.device)
        tags["dtype"] = str(runner.dtype).removeprefix("torch.")
    tags.update({
        "block_size": str(executor.block_size),
        "kv_capacity_tokens": str(executor.num_kv_blocks * executor.block_size),
        "tensor_parallel_size": str(getattr(getattr(executor, "session", None), "size", 1)),
        "policy": type(engine.policy).__name__,
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    return tags
