"""A progress bar for long command-line jobs: tqdm when installed, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


class _LineProgress:
    """Prints `desc: done/total` to stderr about every tenth of the way and at the end."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done, self.postfix = total, desc, 0, ""
        self.start = time.perf_counter()
        self.next_print = max(1, total // 10)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.next_print or self.done == self.total:
            self.next_print = self.done + max(1, self.total // 10)
            elapsed = time.perf_counter() - self.start
            print(f"{self.desc}: {self.done}/{self.total} ({elapsed:.0f} s) {self.postfix}", file=sys.stderr,
                  flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        pass


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True) -> Progress:
    """A bar over `total` items on stderr; the caller calls close() when done."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on machines that only run the profiler
        return _LineProgress(total, desc)
    # Redrawing often fills captured logs when stderr is not a terminal.
    return tqdm(total=total, desc=desc, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 15.0)
