"""Peak memory of a test run: the summed RSS of pytest and every process under it, sampled from /proc.

`/usr/bin/time -v` reports the largest single process only; subprocess servers and CLI smoke tests run
beside pytest, so what the machine must hold is the sum over the whole process tree at one moment.

    python experiments/test_suite_memory.py                              # make test's selection
    python experiments/test_suite_memory.py -- tests/engine/test_loaders.py -m "not gpu"
    python experiments/test_suite_memory.py --per-file tests/engine      # one pytest run per file

Prints the peak tree RSS (GiB), the wall time and pytest's exit code; exits with pytest's exit code.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                # The command name (field 2) may hold spaces; the parent pid follows its closing ')'.
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    """Summed resident memory of `root` and all its descendants, in bytes (0 once it has ended)."""
    tree = _children()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_bytes(pid)
        stack.extend(tree.get(pid, ()))
    return total


def measure(command: list[str], interval_s: float) -> tuple[int, float, int]:
    """Run `command`, sampling its process tree every `interval_s`. Returns (exit code, wall s, peak bytes)."""
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(interval_s)
    return proc.returncode, time.monotonic() - start, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples (default 0.1)")
    parser.add_argument("--pytest", default=str(REPO / ".venv" / "bin" / "pytest"), help="pytest executable")
    parser.add_argument("--per-file", metavar="DIR", help="run each tests file under DIR on its own, one line each")
    parser.add_argument("pytest_args", nargs="*", help='arguments for pytest (default: -m "not gpu" -q)')
    args = parser.parse_args()
    pytest_args = args.pytest_args or ["-m", "not gpu", "-q"]
    if args.interval <= 0:
        parser.error("--interval must be > 0 seconds")

    if args.per_file:
        files = sorted(Path(args.per_file).rglob("test_*.py"))
        if not files:
            parser.error(f"--per-file: no test_*.py under {args.per_file}")
        worst = 0
        for path in files:
            rc, wall, peak = measure([args.pytest, str(path), "-p", "no:cacheprovider", *pytest_args], args.interval)
            print(f"{peak / 2**30:6.2f} GiB {wall:7.1f} s rc={rc} {path}", flush=True)
            worst = max(worst, rc)
        return worst

    rc, wall, peak = measure([args.pytest, *pytest_args], args.interval)
    print(f"peak process-tree RSS {peak / 2**30:.2f} GiB, wall {wall:.1f} s, pytest exit code {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
