"""Wall time of the full test suite with ``-n 2`` against ``-n 0`` (serial), as a ratio.

    python benchmarks/xdist_wall_time.py              # 3 repetitions of each
    python benchmarks/xdist_wall_time.py --reps 5 --workers 2 -- -k "not stress"

Runs alternate (serial, parallel, serial, parallel...) so that background load hits both
alike; each run is a fresh ``python -m pytest`` subprocess.  Prints every run, the medians
and the ratio parallel/serial (below 1 means xdist wins).  ``make test`` uses whichever is
faster; the README records the numbers this script printed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(workers: str, extra: Sequence[str], timeout: float) -> tuple[float, int]:
    command = [sys.executable, "-m", "pytest", "-n", workers, "-q", "-p", "no:cacheprovider",
               *extra]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    seconds = time.monotonic() - started
    for line in proc.stdout.splitlines():  # name what failed: a slow run may be a failing one
        if line.startswith(("FAILED ", "ERROR ")):
            print(f"    {line}", flush=True)
    return seconds, proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each mode (default 3)")
    parser.add_argument("--workers", default="2", help="pytest -n for the parallel runs")
    parser.add_argument("--run-timeout", type=float, default=1800.0)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"0": [], args.workers: []}
    failed = 0
    for rep in range(1, args.reps + 1):
        for workers in ("0", args.workers):
            seconds, status = run(workers, args.pytest_args, args.run_timeout)
            times[workers].append(seconds)
            failed += status != 0
            print(f"rep {rep}: -n {workers:>4}  {seconds:7.1f}s  exit {status}", flush=True)
    serial = statistics.median(times["0"])
    parallel = statistics.median(times[args.workers])
    print(f"median -n 0: {serial:.1f}s   median -n {args.workers}: {parallel:.1f}s   "
          f"ratio (-n {args.workers} / -n 0): {parallel / serial:.2f}")
    if failed:
        print(f"warning: {failed} run(s) had failures; the times include them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
