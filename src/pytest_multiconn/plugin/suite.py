"""Options of ``pytest --pyargs pytest_multiconn.suite`` (the suite as pytest tests)."""

from __future__ import annotations

import pytest

from pytest_multiconn.plugin.options import get_option, register_option

_SUITE_MODULE = "pytest_multiconn/suite/test_contracts.py"


def pytest_addoption(parser: pytest.Parser) -> None:
    register_option(parser, "protocol", default="echo",
                    help="what the --pyargs pytest_multiconn.suite target speaks: echo, line, "
                    "http, redis, exact or length")
    register_option(parser, "send", help="the suite's request (see `multiconn suite --help`)")
    register_option(parser, "expect", help="the suite's exact expected reply")


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # Without a target the suite's tests could only skip, and a CI job that forgot the option
    # would pass: make it a usage error instead.
    if get_option(config, "target"):
        return
    if any(str(item.path).replace("\\", "/").endswith(_SUITE_MODULE) for item in items):
        raise pytest.UsageError(
            "the fault-injection suite needs a server to check: pass --multiconn-target "
            "HOST:PORT (and --multiconn-protocol echo|line|http|redis|exact)"
        )
