"""Stop-string search over text that grows a delta at a time."""

from __future__ import annotations


def find_stop(text: str, delta_len: int, stops: tuple[str, ...]) -> int | None:
    """Index in `text` where the earliest stop string begins, searching only where the last
    `delta_len` characters could complete one; None when no stop string occurs there."""
    best: int | None = None
    for stop in stops:
        start = max(0, len(text) - delta_len - len(stop) + 1)
        idx = text.find(stop, start)
        if idx != -1 and (best is None or idx < best):
            best = idx
    return best
