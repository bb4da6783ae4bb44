"""Wall time of the fault-injection suite (``multiconn suite``) against a good server.

    python benchmarks/suite.py [--quick] [--rounds N] [--json FILE]

Our EchoServer runs in its own process (benchmarks/servers.py, pinned to CPU 0, primed); each
round runs ``python -m pytest_multiconn.cli suite 127.0.0.1 PORT --pid PID --seed 1`` in a
fresh process, as a CI job would, and takes its wall time from start to exit (interpreter
start-up included).  Every round must pass.  Printed: the median wall time, and the median of
each check's own time as the suite's table reports it (the checks' sum is less than the wall
time by the start-up and the suite's fixed work between checks).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, ROOT, ServerProc, machine_note, summary

#: One row of the suite's table: name, connections, bytes, result, time, detail.
ROW = re.compile(r"^(\S+)\s+\d+\s+\d+\s+(pass|fail|skip\S*)\s+(\d+(?:\.\d+)?)(ms|s)\b", re.I)


def run_once(port: int, pid: int, timeout: float = 120.0) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [PYTHON, "-m", "pytest_multiconn.cli", "suite", "127.0.0.1", str(port), "--pid",
           str(pid), "--seed", "1"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    wall = time.perf_counter() - t0
    checks: dict[str, float] = {}
    results: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        m = ROW.match(line)
        if m:
            checks[m.group(1)] = float(m.group(3)) * (1.0 if m.group(4) == "s" else 1e-3)
            results[m.group(1)] = m.group(2)
    if proc.returncode != 0:
        raise RuntimeError(f"the suite failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"{proc.stderr[-1000:]}")
    return {"wall": wall, "checks": checks, "results": results}


def run(rounds: int, log: Any = print) -> dict[str, Any]:
    runs = []
    with ServerProc("ours") as server:
        server.prime()
        run_once(server.port, server.pid)  # untimed: imports, bytecode
        for r in range(rounds):
            res = run_once(server.port, server.pid)
            runs.append(res)
            log(f"  suite     round {r + 1}/{rounds}: {res['wall']:.2f} s "
                f"(checks' own times add up to {sum(res['checks'].values()):.2f} s)")
    names = list(runs[0]["checks"])
    return {
        "wall_s": summary([r["wall"] for r in runs]),
        "checks_s": {n: statistics.median(r["checks"].get(n, 0.0) for r in runs) for n in names},
        "runs": runs,
        "command": "python -m pytest_multiconn.cli suite 127.0.0.1 PORT --pid PID --seed 1",
    }


def print_report(res: dict[str, Any]) -> None:
    w = res["wall_s"]
    print(f"\nfault-injection suite against our EchoServer ({res['command']}; wall time per run "
          f"including interpreter start-up, n={w['n']})")
    print(f"  wall: median {w['median']:.2f} s (min {w['min']:.2f}, max {w['max']:.2f})")
    slow = sorted(res["checks_s"].items(), key=lambda kv: -kv[1])
    print("  per check (median): " + ", ".join(f"{n} {t * 1e3:.0f} ms" for n, t in slow))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(f"machine: {machine_note()}")
    res = run(args.rounds or (3 if args.quick else 5))
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
