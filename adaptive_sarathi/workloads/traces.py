"""Request-length traces: CSV files with num_prefill_tokens and num_decode_tokens columns."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from adaptive_sarathi.workloads.request import WorkloadError

# Traces live beside the checkout (../shared/traces from the repository root), not inside it:
# they are data, not code, and the project must also run without them.
SHARED_TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"


@dataclass(frozen=True)
class RequestLengths:
    num_prompt_tokens: int
    num_output_tokens: int


def load_trace(path: Path | str) -> list[RequestLengths]:
    """Rows of a trace CSV in file order. Raises WorkloadError (a ValueError) naming the file and
    the missing column or bad row; FileNotFoundError when the file does not exist."""
    return list(_load_cached(str(Path(path).resolve())))


@lru_cache(maxsize=8)
def _load_cached(path: str) -> tuple[RequestLengths, ...]:
    # Capacity searches load the same trace once per probe; parsing 30k rows takes ~50 ms.
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"num_prefill_tokens", "num_decode_tokens"} - set(reader.fieldnames or ())
        if missing:
            raise WorkloadError(f"trace {path} lacks the column(s) {sorted(missing)}: "
                                "use num_prefill_tokens,num_decode_tokens per row")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                p, d = int(float(row["num_prefill_tokens"])), int(float(row["num_decode_tokens"]))
            except (TypeError, ValueError):
                raise WorkloadError(f"trace {path} line {line}: token counts must be integers") from None
            if p < 1 or d < 1:
                raise WorkloadError(f"trace {path} line {line}: token counts must be >= 1")
            rows.append(RequestLengths(p, d))
    if not rows:
        raise WorkloadError(f"trace {path} has no rows: add one request per line")
    return tuple(rows)


def resolve_trace(name_or_path: str | Path, base_dir: Path | None = None) -> Path:
    """The CSV a trace argument names: an existing path (relative to `base_dir` when given), else
    a file in SHARED_TRACES ("sharegpt_8k" or "sharegpt_8k.csv"). Raises FileNotFoundError saying
    where it looked."""
    path = Path(name_or_path).expanduser()
    candidates = [base_dir / path if base_dir is not None and not path.is_absolute() else path]
    name = path.name if path.suffix == ".csv" else path.name + ".csv"
    if path.parent == Path("."):
        candidates.append(SHARED_TRACES / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"trace {str(name_or_path)!r} not found (looked at {looked}): pass a CSV path "
                            "with num_prefill_tokens,num_decode_tokens columns")
