"""Per-test diagnostics: the ``multiconn`` report section and the leak check.

Around every test the registry keeps a :class:`~pytest_multiconn.core.registry.TestRecord` of the
servers and proxies started while it ran.  From it:

* a failing test's report gets a ``multiconn`` section: the run seed, each server and proxy
  with its address and counters, and the transcripts of its last connections, trimmed to a
  readable length (``--multiconn-trace`` adds it to passing tests too);
* after teardown, a server of the test that is still running, or a loop thread of ours that
  is still alive, fails the test with an error naming it and where it was started.

The cost for a test that touches nothing of ours is one record, begun and ended by the
plugin's ``pytest_runtest_protocol`` wrapper, one walk over ``threading.enumerate()`` before
and after, and the teardown and report wrappers: 0.00-0.02 ms of the median test's time on
the 2-core CI machine (the last line of ``python benchmarks/fixture.py``).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

import pytest

from pytest_multiconn.core.registry import (
    TestRecord,
    begin_test,
    end_test,
    is_live,
    leaked_threads,
    origin_of,
    pop_fixture,
    push_fixture,
)
from pytest_multiconn.errors import LeakError
from pytest_multiconn.plugin.nodeid import base_nodeid
from pytest_multiconn.plugin.options import get_option, register_option

SECTION = "multiconn"


_RECORD = pytest.StashKey[TestRecord]()
_TRACE = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    register_option(
        parser,
        "trace",
        action="store_true",
        default=False,
        help="show the multiconn report section (seed, servers, connection transcripts) for "
        "passing tests too, not only for failures",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TRACE] = bool(get_option(config, "trace"))


# -- the per-test record -------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    # Servers started while a module- or session-scoped fixture is set up belong to that
    # fixture, not to the test that happened to request it first.
    before = push_fixture(fixturedef.argname, fixturedef.scope)
    try:
        return (yield)
    finally:
        pop_fixture(before)


def begin_record(item: pytest.Item, nodeid: str) -> None:
    """Start ``item``'s record (the plugin's ``pytest_runtest_protocol`` wrapper calls this
    and :func:`end_record`: one hook wrapper per test less than a setup wrapper of its own)."""
    item.stash[_RECORD] = begin_test(nodeid)


def end_record(item: pytest.Item) -> None:
    """End ``item``'s record once its teardown was reported (idempotent)."""
    record = item.stash.get(_RECORD, None)
    if record is not None:
        end_test(record)
        del item.stash[_RECORD]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    try:
        result = yield
    except BaseException as exc:
        record = item.stash.get(_RECORD, None)
        message = _check_leaks(record) if record is not None else ""
        if message:
            exc.add_note(message)
        raise
    record = item.stash.get(_RECORD, None)
    message = _check_leaks(record) if record is not None else ""
    if message:
        raise LeakError(message)
    return result


def _check_leaks(record: TestRecord) -> str:
    """Stop what ``record``'s test left running and describe it ("" if nothing leaked)."""
    problems: list[str] = []
    for server in record.servers:
        if is_live(server):
            origin = origin_of(server) or "origin unknown"
            problems.append(f"  {server!r} is still running; {origin}")
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - reported with the leak, not instead of it
                problems.append(f"    (stopping it now failed: {type(exc).__name__}: {exc})")
        else:
            # Every server the registry tracks (ours: stream and UDP servers, proxies) says
            # which of its sockets are still open.
            open_sockets = getattr(server, "open_sockets", None)
            problems.extend(
                f"  {server!r} left a socket open: {what}; {origin_of(server)}"
                for what in (open_sockets() if callable(open_sockets) else ())
            )
    problems.extend(
        f"  thread {thread.name!r} is still alive (a Loop or server started in this test and "
        "not stopped)"
        for thread in leaked_threads(record)
    )
    if not problems:
        return ""
    return (
        f"{record.nodeid} leaked {len(problems)} resource(s) of pytest-multiconn:\n"
        + "\n".join(problems)
        + "\nStop servers with `with` or `server.stop()` (the multiconn_server_factory fixture "
        "stops the ones it starts); leaked servers were stopped now."
    )


# -- the report section ----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    record = item.stash.get(_RECORD, None)
    if record is None:
        return report
    if call.excinfo is not None and isinstance(call.excinfo.value, LeakError):
        # The message says everything; a traceback into this plugin would only add noise.
        report.longrepr = f"LeakError: {call.excinfo.value}"
    if report.failed or (report.when == "call" and item.config.stash.get(_TRACE, False)):
        from pytest_multiconn.plugin.section import faulty_tests, format_section, servers_of

        servers = servers_of(item, record)
        nodeid = base_nodeid(item)
        if servers or _uses_our_fixtures(item) or nodeid in faulty_tests():
            _add_section(report, format_section(servers, nodeid=nodeid))
    return report


def _add_section(report: pytest.TestReport, text: str) -> None:
    """Attach the section where both the terminal and ``--junit-xml`` show it.

    A failure's section goes into its ``longrepr``: pytest prints a longrepr's titled sections
    under the traceback (the same ``---- multiconn ----`` heading as a report section) and
    writes ``str(longrepr)`` as the text of the ``<failure>`` or ``<error>`` element, which is
    what CI pages show.  Report sections, by contrast, reach JUnit XML only if named
    ``Captured ...`` and only with ``junit_logging`` set; and ``user_properties`` become a
    ``<properties>`` inside ``<testcase>``, which xunit2 (pytest's default family) forbids and
    CI pages do not show.  A longrepr that is neither an exception's nor text (a fixture
    lookup error's, say), and a passing test under ``--multiconn-trace``, keep the report
    section: the terminal shows it, once.
    """
    longrepr = report.longrepr
    if report.failed and callable(getattr(longrepr, "addsection", None)):
        longrepr.addsection(SECTION, text.rstrip("\n"))  # type: ignore[union-attr]
    elif report.failed and isinstance(longrepr, str):
        # Our own LeakError message, for one.
        report.longrepr = f"{longrepr.rstrip()}\n{f' {SECTION} '.center(80, '-')}\n{text}"
    else:
        report.sections.append((SECTION, text))


def _uses_our_fixtures(item: pytest.Item) -> bool:
    names: Iterable[str] = getattr(item, "fixturenames", ())
    return any(name.startswith("multiconn_") for name in names)


# -- --multiconn-trace for passing tests ----------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    # Failures show their sections already, and so do passes under -rP.
    if not config.stash.get(_TRACE, False) or terminalreporter.hasopt("P"):
        return
    reports = [
        r
        for r in terminalreporter.getreports("passed")
        if r.when == "call" and any(name == SECTION for name, _ in r.sections)
    ]
    if not reports:
        return
    terminalreporter.write_sep("=", "multiconn traces of passing tests")
    for report in reports:
        terminalreporter.write_sep("-", report.nodeid)
        for name, content in report.sections:
            if name == SECTION:
                terminalreporter.write(content)
