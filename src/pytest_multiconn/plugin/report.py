"""Per-test diagnostics: the ``multiconn`` report section and the leak check.

Around every test the registry keeps a :class:`~pytest_multiconn.core.registry.TestRecord` of the
servers and proxies started while it ran.  From it:

* a failing test's report gets a ``multiconn`` section: the run seed, each server and proxy
  with its address and counters, and the transcripts of its last connections, trimmed to a
  readable length (``--multiconn-trace`` adds it to passing tests too);
* after teardown, a server of the test that is still running, or a loop thread of ours that
  is still alive, fails the test with an error naming it and where it was started.

The cost for a test that touches nothing of ours is a few microseconds: one record, one
walk over ``threading.enumerate()`` before and after.
"""

from __future__ import annotations

import dataclasses
import sys
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
from pytest_multiconn.core.seed import derive_seed, get_run_seed, set_current_test_id
from pytest_multiconn.errors import LeakError
from pytest_multiconn.plugin.nodeid import base_nodeid
from pytest_multiconn.plugin.options import get_option, register_option

SECTION = "multiconn"

#: Bounds that keep the section readable: servers shown, connections per server, transcript
#: lines per connection, and lines in all.
MAX_SERVERS = 8
MAX_CONNECTIONS = 6
MAX_TRANSCRIPT_LINES = 14
MAX_LINES = 200

# Bound on a report-time question to a loop that is still running (a stuck loop is often
# why the test failed; the report must not hang on it too).
_REPORT_TIMEOUT = 2.0

_RECORD = pytest.StashKey[TestRecord]()
_TRACE = pytest.StashKey[bool]()


class _Never:
    """Stands for a class whose module is not imported: nothing is an instance of it."""


def _loaded(module: str, name: str) -> Any:
    """``module.name`` if ``module`` is imported, else a class nothing is an instance of.

    The servers, processes and UDP servers the report looks at are ours: if their module was
    never imported, none exists, and importing it here would cost a test that used none of
    them what the plugin no longer pays at start-up (issue 25).
    """
    found = sys.modules.get(module)
    return getattr(found, name, _Never) if found is not None else _Never


def _server_base() -> Any:
    return _loaded("pytest_multiconn.core.server", "ServerBase")


def _server_process() -> Any:
    return _loaded("pytest_multiconn.core.process", "ServerProcess")


def _udp_server_base() -> Any:
    return _loaded("pytest_multiconn.udp.base", "UDPServerBase")


def _faulty_tests() -> set[str]:
    found: set[str] = _loaded("pytest_multiconn.faults.client", "FAULTY_TESTS")
    return found if isinstance(found, set) else set()


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    # Seeds derived while this test runs use its node id without xdist's @group suffix;
    # the previous name comes back afterwards (an in-process pytester run nests).
    previous = set_current_test_id(base_nodeid(item))
    try:
        return (yield)
    finally:
        set_current_test_id(previous)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_RECORD] = begin_test(base_nodeid(item))
    return (yield)


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
            problems.extend(
                f"  {server!r} left a socket open: {what}; {origin_of(server)}"
                for what in _open_sockets(server)
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


def _open_sockets(server: Any) -> list[str]:
    # Ours (TCP: the listener and each connection; UDP: the bound socket and each session's).
    if isinstance(server, (_server_base(), _udp_server_base())):
        return server.open_sockets()  # type: ignore[no-any-return]
    return []


# -- the report section ----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    record = item.stash.get(_RECORD, None)
    if record is None:
        return report
    try:
        if call.excinfo is not None and isinstance(call.excinfo.value, LeakError):
            # The message says everything; a traceback into this plugin would only add noise.
            report.longrepr = f"LeakError: {call.excinfo.value}"
        if report.failed or (report.when == "call" and item.config.stash.get(_TRACE, False)):
            servers = _servers_of(item, record)
            nodeid = base_nodeid(item)
            if servers or _uses_our_fixtures(item) or nodeid in _faulty_tests():
                _add_section(report, format_section(servers, nodeid=nodeid))
    finally:
        if report.when == "teardown":
            end_test(record)
            del item.stash[_RECORD]
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


def _servers_of(item: pytest.Item, record: TestRecord) -> list[Any]:
    """Servers the test started, then wider-scoped ones it was handed as fixture values."""
    servers = list(record.servers)
    seen = {id(s) for s in servers}
    funcargs: dict[str, Any] = getattr(item, "funcargs", {}) or {}
    ours = (_server_base(), _server_process(), _udp_server_base())
    for value in funcargs.values():
        if isinstance(value, ours) and id(value) not in seen:
            seen.add(id(value))
            servers.append(value)
    return servers


def format_section(servers: list[Any], seed: int | None = None, nodeid: str = "") -> str:
    """The text of the ``multiconn`` section for ``servers`` (servers or proxies)."""
    seed = get_run_seed() if seed is None else seed
    lines = [f"seed: {seed} (replay with --multiconn-seed {seed})"]
    if nodeid:
        lines.append(
            f"this test's seed {derive_seed(seed, nodeid)}; replay the same chunk boundaries: "
            f"pytest '{nodeid}' --multiconn-seed {seed}"
        )
    if not servers:
        lines.append("no server or proxy was started by this test")
    for server in servers[:MAX_SERVERS]:
        lines.extend(_describe(server))
    if len(servers) > MAX_SERVERS:
        lines.append(f"... and {len(servers) - MAX_SERVERS} more servers")
    if len(lines) > MAX_LINES:
        lines = [*lines[: MAX_LINES - 1], f"... {len(lines) - MAX_LINES + 1} more lines cut"]
    return "\n".join(lines) + "\n"


def _describe(server: Any) -> list[str]:
    lines = [_safe_repr(server)]
    if isinstance(server, _server_process()):
        output = server.output().splitlines()
        if output:
            lines.append(f"  last output ({len(output)} lines kept):")
            lines.extend(_trim(output, "    "))
        return lines
    origin = origin_of(server)
    if origin:
        lines.append(f"  {origin}")
    report = getattr(server, "report", None)
    if callable(report):
        # A proxy describes itself best: its faults, its seed, and one transcript per proxied
        # connection covering both sides, with the faults that acted.
        try:
            body = str(report(MAX_CONNECTIONS)).splitlines()[1:]  # line 1 is the repr above
        except Exception as exc:  # noqa: BLE001 - a report must never fail because of its subject
            body = [f"(report unavailable: {type(exc).__name__}: {exc})"]
        lines.extend(_trim(body, "", MAX_TRANSCRIPT_LINES * MAX_CONNECTIONS))
        return lines
    try:
        stats, conns = _snapshot(server)
    except Exception as exc:  # noqa: BLE001 - a report must never fail because of its subject
        lines.append(f"  (counters unavailable: {type(exc).__name__}: {exc})")
        return lines
    stopped = isinstance(server, _server_base()) and server.stopped
    # A stopped listener is "paused" by definition: not worth a word.
    lines.append(f"  counters: {_format_stats(stats, {'accept_paused'} if stopped else set())}")
    if not conns:
        lines.append("  no connections")
        return lines
    shown = conns[-MAX_CONNECTIONS:]
    # Servers keep snapshots of their last few closed connections only; count from stats.
    total = max(len(conns), int(getattr(stats, "accepted", 0) or 0))
    lines.append(
        f"  connections: {total}"
        + (f", showing the last {len(shown)}" if total > len(shown) else "")
    )
    for info in shown:
        lines.append(f"  - {info}")
        lines.extend(_trim(str(getattr(info, "transcript", "")).splitlines(), "    "))
    return lines


def _safe_repr(obj: Any) -> str:
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the report
        return object.__repr__(obj)


def _snapshot(server: Any) -> tuple[Any, list[Any]]:
    """Counters and connection snapshots (recently closed, then live), bounded in time."""
    if isinstance(server, _server_base()):
        return server.snapshot(_REPORT_TIMEOUT)  # type: ignore[no-any-return]
    # A proxy or another server-like object: its public interface.
    stats = server.stats()
    closed = list(getattr(server, "recently_closed", list)())
    live = list(getattr(server, "connections", list)())
    return stats, [*closed, *live]


def _format_stats(stats: Any, skip: set[str]) -> str:
    """``name=value`` for the fields that say something: the three counts, and non-zeros."""
    if not dataclasses.is_dataclass(stats) or isinstance(stats, type):
        return repr(stats)
    always = {"accepted", "open", "closed"}
    parts = [
        f"{f.name}={getattr(stats, f.name)}"
        for f in dataclasses.fields(stats)
        if f.name not in skip
        and (f.name in always or getattr(stats, f.name) not in (0, False, None, ""))
    ]
    return " ".join(parts)


def _trim(lines: list[str], indent: str, limit: int = MAX_TRANSCRIPT_LINES) -> list[str]:
    if len(lines) > limit:
        head, tail = 3, limit - 4
        cut = len(lines) - head - tail
        lines = [*lines[:head], f"  ... {cut} transcript lines cut ...", *lines[-tail:]]
    return [indent + line for line in lines]


# -- --multiconn-trace for passing tests ----------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    # Failures show their sections already, and so do passes under -rP.
    if not config.stash.get(_TRACE, False) or terminalreporter.hasopt("P"):
        return
    reports = [
        r for r in terminalreporter.getreports("passed")
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
