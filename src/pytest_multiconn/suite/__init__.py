"""The fault-injection suite: contracts any server should keep, checked over real sockets.

``check_echo_server(address)`` runs every check and raises :class:`ContractBreak` on a broken
contract; ``run_suite`` returns a :class:`SuiteReport`.  ``pytest --pyargs pytest_multiconn.suite
--multiconn-target HOST:PORT`` runs the same checks as pytest tests.
"""

from pytest_multiconn.suite.checks import (
    CHECK_NAMES,
    ContractBreak,
    SuiteLimits,
    SuiteReport,
    SuiteRow,
    check_echo_server,
    run_check,
    run_checks,
    run_suite,
)

__all__ = [
    "CHECK_NAMES",
    "ContractBreak",
    "SuiteLimits",
    "SuiteReport",
    "SuiteRow",
    "check_echo_server",
    "run_check",
    "run_checks",
    "run_suite",
]
