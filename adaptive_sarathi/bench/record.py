"""The benchmark's JSON document: the config, the summary and every request as sent and answered,
so that `simulate --replay` can serve exactly the same requests.

    {"config": {...}, "interrupted": false, "summary": {...},
     "requests": [{"arrival_s": 0.41, "prompt_len": 212, "output_len": 37, "start_s": 0.4102,
                   "success": true, "ttft_s": 0.051, "itl_s": [0.012, ...], "slo_class": null, ...}, ...]}

arrival_s is on the workload clock (the first phase starts at 0), as simulate's arrivals are;
slo_class is the workload's SLO class of the request (null: the top-level targets; absent in
files of versions before it, read as null).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from adaptive_sarathi.json_values import json_safe
from adaptive_sarathi.workloads import WorkloadError, WorkloadRequest

if TYPE_CHECKING:
    from adaptive_sarathi.bench.config import BenchConfig
    from adaptive_sarathi.bench.run import BenchResult

_REQUEST_FIELDS = ("arrival_s", "prompt_len", "output_len")


def write_json(path: str | Path, config: BenchConfig, result: BenchResult) -> None:
    """Write the config, the summary and every request's record (timings in seconds), in the
    order the workload sent them; infinite and NaN numbers become null."""
    document = {"config": asdict(config), "interrupted": result.interrupted, "summary": result.summary,
                "requests": [{**asdict(r), "tpot_s": r.tpot_s}
                             for r in sorted(result.results, key=lambda r: r.arrival_s)]}
    with open(path, "w") as f:
        json.dump(json_safe(document), f, indent=1)


def read_requests(path: str | Path) -> list[WorkloadRequest]:
    """The requests a benchmark JSON file recorded, as a workload (arrival time, prompt and
    output length, SLO class), in arrival order. An interrupted run's file holds the requests that finished.
    Raises FileNotFoundError, or WorkloadError naming the file and the missing field."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WorkloadError(f"{path}: not valid JSON ({err}): pass the file `bench --json` wrote") from None
    records = document.get("requests") if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise WorkloadError(f"{path}: no 'requests' list: pass the file `bench --json` wrote")
    requests = []
    for i, record in enumerate(records):
        missing = [key for key in _REQUEST_FIELDS if not isinstance(record, dict) or record.get(key) is None]
        if missing:
            raise WorkloadError(f"{path}: requests[{i}] lacks {', '.join(missing)}: record it again with this "
                                "version's bench --json")
        slo_class = record.get("slo_class")
        if slo_class is not None and not (isinstance(slo_class, str) and slo_class):
            raise WorkloadError(f"{path}: requests[{i}].slo_class={slo_class!r} is invalid: use a class name or null")
        requests.append(WorkloadRequest(float(record["arrival_s"]), int(record["prompt_len"]),
                                        int(record["output_len"]), slo_class))
    return sorted(requests, key=lambda r: r.arrival_time_s)
