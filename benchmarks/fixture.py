"""Per-test cost of a function-scoped ``multiconn_server``, against an empty test and against
a function-scoped pytest-httpserver server, measured in the same invocation.

    python benchmarks/fixture.py [--quick] [--tests N] [--json FILE]

It writes a throw-away test project with four test files, runs each with
``python -m pytest -q -p no:cacheprovider`` in a subprocess (round-robin, twice), and reads the
per-test durations that pytest itself reports for the setup, call and teardown phases (a tiny
conftest collects ``report.duration``).  The figure for a variant is the median over its tests
of setup + call + teardown, minus the same median for the empty tests of the same round.

Variants:
  empty        ``def test(): pass``
  server       ``def test(multiconn_server): ...`` (function scope: started and stopped per test)
  exchange     the same, plus one client connection that echoes 64 bytes and closes
  httpserver   pytest-httpserver's ``HTTPServer`` started and stopped by a function-scoped
               fixture (its own ``httpserver`` fixture is session-scoped; a per-test server is
               what a test needs for isolation, and what this compares against)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, ROOT, fmt, tempdir

CONFTEST = '''
import json, os

_durations = {}


def pytest_runtest_logreport(report):
    _durations.setdefault(report.nodeid, {})[report.when] = report.duration


def pytest_sessionfinish(session):
    with open(os.environ["MULTICONN_BENCH_OUT"], "w") as f:
        json.dump(_durations, f)
'''

TESTS = {
    "empty": '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_empty(i):
    pass
''',
    "server": '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_server(i, multiconn_server):
    assert multiconn_server.port
''',
    "exchange": '''
import socket
import pytest

PAYLOAD = bytes(range(64))

@pytest.mark.parametrize("i", range({n}))
def test_exchange(i, multiconn_server):
    with socket.create_connection(multiconn_server.address, timeout=10) as sock:
        sock.sendall(PAYLOAD)
        got = b""
        while len(got) < len(PAYLOAD):
            chunk = sock.recv(4096)
            assert chunk, "server closed early"
            got += chunk
    assert got == PAYLOAD
''',
    "httpserver": '''
import pytest
from pytest_httpserver import HTTPServer

@pytest.fixture
def fn_httpserver():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()

@pytest.mark.parametrize("i", range({n}))
def test_httpserver(i, fn_httpserver):
    assert fn_httpserver.port
''',
}


def have_httpserver() -> bool:
    try:
        import pytest_httpserver  # noqa: F401 - only probing whether it is installed
    except ImportError:
        return False
    return True


def run_variant(project: Path, variant: str) -> dict[str, Any]:
    out = project / f"{variant}.json"
    env = dict(os.environ, MULTICONN_BENCH_OUT=str(out), PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTEST_ADDOPTS", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         f"test_{variant}.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}: pytest exited {proc.returncode}:\n{proc.stdout[-2000:]}")
    durations = json.loads(out.read_text())
    per_test = [sum(d.values()) for d in durations.values()]
    setup_teardown = [d.get("setup", 0.0) + d.get("teardown", 0.0) for d in durations.values()]
    return {
        "tests": len(per_test),
        "median": statistics.median(per_test),
        "median_setup_teardown": statistics.median(setup_teardown),
        "wall": wall,
    }


def run(n: int, n_http: int, rounds: int, log: Any = print) -> dict[str, Any]:
    project = tempdir("multiconn-fixture-bench-")
    (project / "conftest.py").write_text(CONFTEST)
    variants = ["empty", "server", "exchange"]
    notes = []
    if have_httpserver():
        variants.append("httpserver")
    else:
        notes.append("pytest-httpserver is not installed (pip install -e '.[bench]'): "
                     "no httpserver comparison")
    for v, source in TESTS.items():
        if v not in variants:
            continue
        count = n_http if v == "httpserver" else n
        (project / f"test_{v}.py").write_text(textwrap.dedent(source).replace("{n}", str(count)))
    rounds_out: list[dict[str, Any]] = []
    for r in range(rounds):
        res = {}
        for v in variants:
            res[v] = run_variant(project, v)
            log(f"  fixture   {v:10} round {r + 1}/{rounds}: median {res[v]['median'] * 1e3:.3f} ms"
                f" per test ({res[v]['tests']} tests, {res[v]['wall']:.1f} s)")
        rounds_out.append(res)
    overhead: dict[str, list[float]] = {v: [] for v in variants if v != "empty"}
    for res in rounds_out:
        base = res["empty"]["median"]
        for v, values in overhead.items():
            values.append(res[v]["median"] - base)
    return {
        "rounds": rounds_out,
        "overhead_ms": {v: statistics.median(x) * 1e3 for v, x in overhead.items()},
        "empty_ms": statistics.median(r["empty"]["median"] for r in rounds_out) * 1e3,
        "tests": n,
        "tests_httpserver": n_http,
        "notes": notes,
    }


def print_report(res: dict[str, Any]) -> None:
    print(f"\nper-test fixture overhead (median per test minus an empty test's "
          f"{fmt(res['empty_ms'])} ms; {res['tests']} tests per variant, "
          f"{res['tests_httpserver']} for httpserver)")
    for v, ms in res["overhead_ms"].items():
        print(f"  {v:10} {ms:8.3f} ms")
    if "httpserver" in res["overhead_ms"] and res["overhead_ms"]["server"] > 0:
        ratio = res["overhead_ms"]["httpserver"] / res["overhead_ms"]["server"]
        print(f"  multiconn_server is {ratio:,.0f}x cheaper than a function-scoped httpserver")
    for note in res["notes"]:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tests", type=int, help="tests per variant (default 500; quick 200)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n = args.tests or (200 if args.quick else 500)
    res = run(n, 10 if args.quick else 40, 1 if args.quick else 2)
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
