"""Run the full test suite many times under pytest-xdist and count flaky failures.

    python tools/flake_check.py                 # 20 runs with -n 2
    python tools/flake_check.py --runs 5 --workers 4 -- -k proxy

Each run is a fresh ``python -m pytest -n WORKERS`` in a subprocess (so nothing carries over
between runs), bounded by ``--run-timeout``.  One line per run, then a summary: how many runs
failed, which tests failed and how often, and the wall times.  Exit status 1 if any run
failed, so CI can run it as a gate.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# pytest's final line, e.g. "=== 1 failed, 250 passed, 2 errors in 40.1s ===" (-q drops the =).
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
# The short summary (-ra is in addopts): "FAILED tests/x.py::test_y - reason".
_FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)")


@dataclass
class RunResult:
    number: int
    status: int | None  # None: the run hit --run-timeout
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    tail: str = ""
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0

    def line(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "no counts"
        status = "TIMEOUT" if self.status is None else f"exit {self.status}"
        return f"run {self.number:2d}: {status:8s} {self.seconds:7.1f}s  {counts}"


def parse(output: str) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    lines = output.strip().splitlines()
    for line in reversed(lines):
        found = _COUNT.findall(line)
        if found and " in " in line:
            for number, kind in found:
                counts["errors" if kind.startswith("error") else kind] = int(number)
            break
    failures = [m.group(2) for m in map(_FAILED_LINE.match, lines) if m]
    return counts, failures


def run_once(number: int, workers: str, extra: Sequence[str], timeout: float) -> RunResult:
    command = [sys.executable, "-m", "pytest", "-n", workers, "-q", "-p", "no:cacheprovider",
               *extra]
    started = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return RunResult(number, None, time.monotonic() - started, tail=out[-3000:])
    seconds = time.monotonic() - started
    counts, failures = parse(proc.stdout)
    output = proc.stdout + proc.stderr
    return RunResult(number, proc.returncode, seconds, counts, failures,
                     tail=output[-3000:], output=output)


def summarise(results: list[RunResult]) -> str:
    failed = [r for r in results if not r.ok]
    times = [r.seconds for r in results]
    by_test = collections.Counter(t for r in results for t in set(r.failures))
    lines = [
        f"{len(results)} runs, {len(failed)} failed "
        f"({sum(r.counts.get('failed', 0) + r.counts.get('errors', 0) for r in results)} "
        "failing tests in all)",
        f"wall time: median {statistics.median(times):.1f}s, min {min(times):.1f}s, "
        f"max {max(times):.1f}s",
    ]
    if by_test:
        lines.append("failures by test (runs that failed it):")
        lines.extend(f"  {n:3d}  {test}" for test, n in by_test.most_common())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument("--workers", default="2", help="pytest -n value (default 2)")
    parser.add_argument("--run-timeout", type=float, default=1800.0,
                        help="seconds before one run counts as hung (default 1800)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where to keep the full output of failed runs (default: a new "
                        "temporary directory)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix="flake-check-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    for number in range(1, args.runs + 1):
        result = run_once(number, args.workers, args.pytest_args, args.run_timeout)
        results.append(result)
        print(result.line(), flush=True)
        for test in result.failures:
            print(f"         {test}", flush=True)
        if not result.ok:
            log = log_dir / f"run-{number:02d}.txt"
            log.write_text(result.output or result.tail)
            print(f"         full output: {log}", flush=True)
        if result.status not in (0, 1):
            # Not a test failure: an internal error, a usage error, or a hang.  Show why.
            print(result.tail, flush=True)
    print(summarise(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
