"""The fault-injection suite: contracts any request/response server should keep, checked over
real sockets.

``check_server(address, exchange=...)`` runs every check and raises :class:`ContractBreak`
naming each broken contract; ``run_checks`` returns a :class:`SuiteReport`.  ``pytest --pyargs
pytest_multiconn.suite --multiconn-target HOST:PORT [--multiconn-protocol http]`` runs the same
checks as pytest tests.
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

__all__ = [
    "CHECK_NAMES",
    "ContractBreak",
    "SuiteLimits",
    "SuiteReport",
    "SuiteRow",
    "acheck_echo_server",
    "acheck_server",
    "arun_check",
    "arun_checks",
    "arun_suite",
    "check_echo_server",
    "check_server",
    "run_check",
    "run_checks",
    "run_suite",
]

