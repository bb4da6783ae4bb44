"""The fault-injection suite: contracts any request/response server should keep, checked over
real sockets.

``check_server(address, exchange=...)`` runs every check and raises :class:`ContractBreak`
naming each broken contract; ``run_checks`` returns a :class:`SuiteReport`.  ``pytest --pyargs
pytest_multiconn.suite --multiconn-target HOST:PORT [--multiconn-protocol http]`` runs the same
checks as pytest tests.  ``check_client(call, ...)`` and ``acheck_client`` judge a *client*
instead: how it behaves when its server's replies are sliced, late, stalled, reset, cut, lost
or garbage (see :mod:`pytest_multiconn.suite.client`).
"""

from pytest_multiconn.suite.checks import (
    CHECK_NAMES,
    ContractBreak,
    SuiteLimits,
    SuiteReport,
    SuiteRow,
    acheck_echo_server,
    acheck_server,
    arun_check,
    arun_checks,
    arun_suite,
    check_echo_server,
    check_server,
    run_check,
    run_checks,
    run_suite,
)
from pytest_multiconn.suite.client import CLIENT_ROW_NAMES, acheck_client, check_client

__all__ = [
    "CHECK_NAMES",
    "CLIENT_ROW_NAMES",
    "ContractBreak",
    "SuiteLimits",
    "SuiteReport",
    "SuiteRow",
    "acheck_client",
    "acheck_echo_server",
    "acheck_server",
    "arun_check",
    "arun_checks",
    "arun_suite",
    "check_client",
    "check_echo_server",
    "check_server",
    "run_check",
    "run_checks",
    "run_suite",
]

