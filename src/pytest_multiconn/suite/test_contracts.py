"""The fault-injection suite as pytest tests, one per check, against ``--multiconn-target``.

Run it against any server::

    pytest --pyargs pytest_multiconn.suite --multiconn-target 127.0.0.1:9000 \\
        --multiconn-protocol http

Each test id is a check name (``-k half_close``); the seed is the run seed
(``--multiconn-seed N`` replays one), and a failure's message says which contract broke.
Without ``--multiconn-target`` the run is a usage error.  The suite's checks run together, as
``multiconn suite`` runs them (some concurrently), once per module; each test reports its row.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_multiconn.core.address import parse_hostport
from pytest_multiconn.core.escapes import unescape
from pytest_multiconn.core.seed import get_run_seed
from pytest_multiconn.exchanges import by_name
from pytest_multiconn.plugin.options import get_option
from pytest_multiconn.suite.checks import CHECK_NAMES, SuiteReport, run_checks


def _unescape(text: Any) -> bytes | None:
    if text is None:
        return None
    return unescape(str(text))


@pytest.fixture(scope="module")
def multiconn_suite_report(request: pytest.FixtureRequest) -> SuiteReport:
    """The suite's report against ``--multiconn-target HOST:PORT``: the checks selected in
    this session run once.  Module scope; no teardown."""
    config = request.config
    host, port = parse_hostport(str(get_option(config, "target")))
    exchange = by_name(str(get_option(config, "protocol")),
                       send=_unescape(get_option(config, "send")),
                       expect=_unescape(get_option(config, "expect")))
    selected = [item.callspec.params["check"] for item in request.session.items
                if getattr(item, "module", None) is request.module and hasattr(item, "callspec")]
    return run_checks((host, port), exchange, seed=get_run_seed(), only=selected or None)


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_contract(check: str, multiconn_suite_report: SuiteReport) -> None:
    report = multiconn_suite_report
    if report.rows and report.rows[0].fault == "connect":
        pytest.fail(f"{report.address!r}: {report.rows[0].detail}", pytrace=False)
    row = next(r for r in report.rows if r.fault == check)
    if not row.passed:
        pytest.fail(f"{check} against {report.address!r} (seed {report.seed}): {row.detail}",
                    pytrace=False)
    if row.result == "n/a":
        pytest.skip(row.detail)
