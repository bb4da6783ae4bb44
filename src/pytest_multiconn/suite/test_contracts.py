"""The fault-injection suite as pytest tests, one per check, against ``--multiconn-target``.

Run it against any echo server::

    pytest --pyargs pytest_multiconn.suite --multiconn-target 127.0.0.1:9000

Each test id is a check name (``-k half_close``); the seed is the run seed
(``--multiconn-seed N`` replays one), and a failure's message says which contract broke.
Without ``--multiconn-target`` every test is skipped with a message saying how to give one.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_multiconn.core.address import parse_hostport
from pytest_multiconn.core.seed import derive_seed, get_run_seed
from pytest_multiconn.plugin.options import get_option
from pytest_multiconn.suite.checks import CHECK_NAMES, run_check
from pytest_multiconn.suite.probes import listener_pid


@pytest.fixture(scope="module")
def multiconn_target(pytestconfig: pytest.Config) -> tuple[Any, int | None]:
    """The ``(address, pid)`` from ``--multiconn-target HOST:PORT`` (pid: the listening process,
    when this machine shows it).  Module scope; no teardown; skips when no target is given."""
    target = get_option(pytestconfig, "target")
    if not target:
        pytest.skip("no target: pass --multiconn-target HOST:PORT (an echo server to check)")
    host, port = parse_hostport(str(target))
    address = (host, port)
    return address, listener_pid(address)


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_echo_contract(check: str, multiconn_target: tuple[Any, int | None]) -> None:
    address, pid = multiconn_target
    row = run_check(check, address, seed=derive_seed(get_run_seed(), check), pid=pid)
    if not row.passed:
        pytest.fail(f"{check} against {address!r}: {row.detail}", pytrace=False)
