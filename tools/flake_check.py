"""Run the full test suite many times under pytest-xdist and count flaky failures.

    python tools/flake_check.py                 # 20 runs with -n 2
    python tools/flake_check.py --burn 1        # the same, with a CPU burner beside them
    python tools/flake_check.py --runs 5 --workers 4 -- -k proxy

Each run is a fresh ``python -m pytest -n WORKERS`` in a subprocess (so nothing carries over
between runs), bounded by ``--run-timeout``.  One line per run, then a summary: how many runs
failed, which tests failed and how often, and the wall times.  Exit status 1 if any run
failed, so CI can run it as a gate.

``--burn N`` keeps N busy-looping processes running for the whole check, so the tests run
with a core taken (the "CPU burner on the other core" our suite must pass beside).  With
pytest-randomly installed, each run's line names its ``--randomly-seed``, and a failing run
replays with ``python -m pytest -p randomly --randomly-seed=SEED``.
"""

from __future__ import annotations

import argparse
import collections
import math
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
# pytest-randomly's header line, "Using --randomly-seed=1234".
_SEED = re.compile(r"Using --randomly-seed=(\d+)")
# A burner is told to stop (SIGTERM) and then killed if it has not gone within this.
_BURNER_GRACE = 5.0


@dataclass
class RunResult:
    number: int
    status: int | None  # None: the run hit --run-timeout
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    output: str = ""
    seed: str | None = None  # pytest-randomly's seed, when it is installed

    @property
    def tail(self) -> str:
        """The end of the output, shown when a run did not end in test results."""
        return self.output[-3000:]

    @property
    def ok(self) -> bool:
        return self.status == 0

    def line(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "no counts"
        status = "TIMEOUT" if self.status is None else f"exit {self.status}"
        seed = f"  randomly seed {self.seed}" if self.seed else ""
        return f"run {self.number:2d}: {status:8s} {self.seconds:7.1f}s  {counts}{seed}"


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
    # Not -q: it hides the report header, where pytest-randomly names its seed.
    command = [sys.executable, "-m", "pytest", "-n", workers, "-p", "no:cacheprovider",
               *extra]
    started = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return RunResult(number, None, time.monotonic() - started, output=out, seed=_seed(out))
    seconds = time.monotonic() - started
    counts, failures = parse(proc.stdout)
    output = proc.stdout + proc.stderr
    return RunResult(number, proc.returncode, seconds, counts, failures, output=output,
                     seed=_seed(output))


def _seed(output: str) -> str | None:
    found = _SEED.search(output)
    return found.group(1) if found else None


def start_burners(count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` processes that do nothing but use a CPU, until stopped."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             stdin=subprocess.DEVNULL) for _ in range(count)]


def stop_burners(burners: Sequence[subprocess.Popen[bytes]]) -> None:
    for burner in burners:
        burner.terminate()
    for burner in burners:
        try:
            burner.wait(timeout=_BURNER_GRACE)
        except subprocess.TimeoutExpired:
            burner.kill()
            burner.wait(timeout=_BURNER_GRACE)


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
    parser.add_argument("--burn", type=int, default=0, metavar="N",
                        help="keep N CPU-burning processes running beside the runs (default 0)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where to keep the full output of failed runs (default: a new "
                        "temporary directory)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if not (math.isfinite(args.run_timeout) and args.run_timeout > 0):
        parser.error(f"--run-timeout must be a finite number of seconds above 0, "
                     f"got {args.run_timeout}")
    if args.burn < 0:
        parser.error(f"--burn must be 0 or more, got {args.burn}")
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix="flake-check-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    burners = start_burners(args.burn)
    try:
        results = run_all(args, log_dir)
    finally:
        stop_burners(burners)
    print(summarise(results))
    return 0 if all(r.ok for r in results) else 1


def run_all(args: argparse.Namespace, log_dir: Path) -> list[RunResult]:
    results: list[RunResult] = []
    for number in range(1, args.runs + 1):
        result = run_once(number, args.workers, args.pytest_args, args.run_timeout)
        results.append(result)
        print(result.line(), flush=True)
        for test in result.failures:
            print(f"         {test}", flush=True)
        if not result.ok:
            log = log_dir / f"run-{number:02d}.txt"
            log.write_text(result.output)
            print(f"         full output: {log}", flush=True)
        if result.status not in (0, 1):
            # Not a test failure: an internal error, a usage error, or a hang.  Show why.
            print(result.tail, flush=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
