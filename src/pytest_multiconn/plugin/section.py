"""The text of the ``multiconn`` report section, and which of our objects a test touched.

Imported by :mod:`pytest_multiconn.plugin.report` only when a section is written (a failing
test, ``--multiconn-trace``) or a stopped server's sockets are checked for leaks: every pytest
start imports the report plugin, and on an install whose bytecode is not cached (as under
``PYTHONDONTWRITEBYTECODE=1``) pytest parses and rewrites each byte of it at every start
(issue 25).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest

from pytest_multiconn.core.registry import TestRecord, origin_of
from pytest_multiconn.core.seed import derive_seed, get_run_seed

#: Bounds that keep the section readable: servers shown, connections per server, transcript
#: lines per connection, and lines in all.
MAX_SERVERS = 8
MAX_CONNECTIONS = 6
MAX_TRANSCRIPT_LINES = 14
MAX_LINES = 200

# Bound on a report-time question to a loop that is still running (a stuck loop is often
# why the test failed; the report must not hang on it too).
_REPORT_TIMEOUT = 2.0


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


def faulty_tests() -> set[str]:
    found: set[str] = _loaded("pytest_multiconn.faults.client", "FAULTY_TESTS")
    return found if isinstance(found, set) else set()


def servers_of(item: pytest.Item, record: TestRecord) -> list[Any]:
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
