"""Request-length traces: CSV files with num_prefill_tokens and num_decode_tokens columns."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# Traces live beside the checkout, not inside it (they are data, not code).
SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"


@dataclass(frozen=True)
class RequestLengths:
    num_prompt_tokens: int
    num_output_tokens: int


def load_trace(path: Path | str) -> list[RequestLengths]:
    """Rows of a trace CSV in file order. Raises ValueError naming the file and the missing column
    or bad row; FileNotFoundError when the file does not exist."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"num_prefill_tokens", "num_decode_tokens"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"trace {path} lacks the column(s) {sorted(missing)}: "
                             "use num_prefill_tokens,num_decode_tokens per row")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                p, d = int(float(row["num_prefill_tokens"])), int(float(row["num_decode_tokens"]))
            except ValueError:
                raise ValueError(f"trace {path} line {line}: token counts must be integers") from None
            if p < 1 or d < 1:
                raise ValueError(f"trace {path} line {line}: token counts must be >= 1")
            rows.append(RequestLengths(p, d))
    return rows
