"""python -m adaptive_sarathi.dashboards [--check] [--dir DIR]: write or check the dashboards' JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaptive_sarathi.dashboards import DEFAULT_DIR, problems, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_sarathi.dashboards",
                                     description="Write the Grafana dashboards' JSON, or check the committed JSON.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the JSON is stale or a query names an unknown metric")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the dashboards folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        found = problems(args.dir)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            return 1
        print(f"dashboards in {args.dir} are up to date")
        return 0
    for path in write(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
