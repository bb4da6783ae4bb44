"""The fault-injection suite against the panel of REAL servers, checked against their measured
TRUTH (tests/panel_suite.py; the truth harness is tests/panel_truth.py).

One test per server: it starts the server, measures the truth on it once, then runs the
suite with seeds 1..5 and compares every row with the truth; the test fails naming every
disagreement (and the truth's numbers).  Each run's time is recorded (``suite_seconds_<seed>``
in the JUnit properties; benchmarks/panel.py prints it); only a run over the generous
:data:`~panel_suite.RUN_LIMIT` fails here.  A server whose binary or package is missing
skips, naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from panel_suite import FAIL, Truth, disagreements, exchange_for, measure_truth, run_suite
from panel_truth import start_spinning
from pytest_multiconn.exchanges import HTTP
from pytest_multiconn.suite.checks import run_checks
from realservers import SERVERS, RealServer, require, running

#: Every test runs the suite's CPU, memory and timing rows against a real server.
pytestmark = pytest.mark.load_sensitive

SEEDS = (1, 2, 3, 4, 5)
NAMES = sorted(SERVERS)

#: Truth per server name, measured once (per worker process) on the server the suite runs
#: against.
_TRUTH: dict[str, Truth] = {}


def _truth(server: RealServer) -> Truth:
    if server.name not in _TRUTH:
        _TRUTH[server.name] = measure_truth(server)
    return _TRUTH[server.name]


@pytest.mark.parametrize("name", NAMES)
def test_panel_suite_agrees_with_truth(name: str, tmp_path: Path,
                                       record_property: Callable[[str, object], None]) -> None:
    require(name)
    # The truth on one process, each seed's run on a freshly started one: memory a server
    # freed after an earlier flood is reused without growing, so a second never_read against
    # the same process cannot show an unbounded server (the row says so: a note).
    with running(name, tmp_path / "truth") as server:
        truth = _truth(server)
    exchange, _ = exchange_for(server.protocol)
    problems: list[str] = []
    tables = []
    for seed in SEEDS:
        with running(name, tmp_path / f"seed-{seed}") as server:
            report = run_suite(server, seed)
        record_property(f"suite_seconds_{seed}", round(report.seconds, 2))
        problems += disagreements(report, truth, exchange)
        tables.append(f"--- seed {seed} ({report.seconds:.1f} s) ---\n{report.table()}")
    facts = "\n".join(truth.facts)
    assert not problems, (
        f"{name}: the suite disagrees with the measured truth ({truth.summary()}):\n"
        + "\n".join(problems) + f"\n--- truth ---\n{facts}\n" + "\n".join(tables))


@pytest.mark.parametrize("name", ["gunicorn-sync-1", "gunicorn-gthread-4"])
def test_panel_suite_finds_the_spinning_gunicorn_worker(name: str, tmp_path: Path) -> None:
    """A gunicorn worker made to spin (GET /spin): the silent+never_close row fails "it
    spins" without pid= (the worker is found through the listener's process tree), and
    names the pids it measured, the worker among them, as the busiest."""
    require(name)
    with running(name, tmp_path) as server:
        master = server.pid
        worker = start_spinning(server)
        assert worker in server.worker_pids(), (worker, server.tree_pids())
        report = run_checks(server.address, HTTP(target="/", status=200, expect_body=b"hello\n"),
                            seed=1, only=["silent+never_close"])
    row = report.rows[-1]
    assert row.fault == "silent+never_close", report.table()
    assert row.result == FAIL, report.table()
    assert "it spins" in row.detail, report.table()
    assert report.pid == master, (report.pid, master, worker)
    assert worker in row.pids, (row.pids, master, worker)
    assert master in row.pids, (row.pids, master, worker)
    assert f"busiest: pid {worker}" in row.detail, row.detail
    assert str(master) in row.detail, row.detail
