"""The fault-injection suite's entry points: :func:`check_server` for any protocol,
:func:`check_echo_server` for echo servers, :func:`run_suite` for the printed table
(``multiconn suite HOST PORT --protocol ...``).  The runner is
:mod:`pytest_multiconn.suite.runner`; each row is a module of :mod:`pytest_multiconn.suite.rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pytest_multiconn.core.address import Address, socket_address
from pytest_multiconn.core.blocking import refuse_in_event_loop, to_thread
from pytest_multiconn.core.checks import check_seed
from pytest_multiconn.core.seed import new_seed
from pytest_multiconn.errors import ContractBreak
from pytest_multiconn.exchanges.base import Exchange
from pytest_multiconn.suite.context import SuiteLimits
from pytest_multiconn.suite.model import FAIL, NA, NOTE, PASS, SuiteReport, SuiteRow, format_row
from pytest_multiconn.suite.rows import ROW_NAMES, ROWS
from pytest_multiconn.suite.runner import run_server_checks

#: The rows and their checks, in the order they run.
CHECKS = ROWS
#: The names of the rows (``only=``, ``skip=``, ``--only``, ``--skip``).
CHECK_NAMES = ROW_NAMES

__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "FAIL",
    "NA",
    "NOTE",
    "PASS",
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


def check_server(address: Address, exchange: Exchange | None = None, **kwargs: Any) -> SuiteReport:
    """Run every check against the server at ``address`` speaking ``exchange``; raise
    :class:`ContractBreak` naming every broken contract, else return the report."""
    refuse_in_event_loop("check_server()", "await acheck_server(...)")
    report = run_server_checks(address, exchange, **kwargs)
    report.raise_for_failures()
    return report


def run_checks(address: Address, exchange: Exchange | None = None, **kwargs: Any) -> SuiteReport:
    """Run the checks (``only=`` those named) and return the :class:`SuiteReport`."""
    refuse_in_event_loop("run_checks()", "await arun_checks(...)")
    return run_server_checks(address, exchange, **kwargs)


def run_check(name: str, address: Address, exchange: Exchange | None = None, **kwargs: Any
              ) -> SuiteRow:
    """Run one named check (see :data:`CHECK_NAMES`) and return its row."""
    refuse_in_event_loop("run_check()", "await arun_check(...)")
    if name not in CHECK_NAMES:
        raise ValueError(f"unknown check {name!r}; choose from {', '.join(CHECK_NAMES)}")
    report = run_server_checks(address, exchange, only=[name], **kwargs)
    return report.rows[-1]


def check_echo_server(address: Address, **kwargs: Any) -> SuiteReport:
    """:func:`check_server` with the :class:`~pytest_multiconn.exchanges.Echo` exchange,
    stopping at the first broken contract (``stop_on_failure=False`` runs them all)."""
    refuse_in_event_loop("check_echo_server()", "await acheck_echo_server(...)")
    kwargs.setdefault("stop_on_failure", True)
    return check_server(address, None, **kwargs)


def run_suite(  # noqa: PLR0917 - address, seed and out were positional before
    address: Address,
    seed: int | None = None,
    out: Callable[[str], object] = print,
    exchange: Exchange | None = None,
    replay: str | None = None,
    only: Sequence[str] | None = None,
    reports: dict[str, str] | None = None,
    **kwargs: Any,
) -> bool:
    """Run the suite, printing the table row by row to ``out``; True if every row passed.
    ``replay`` is the command line to print with the seed (``{seed}`` is filled in);
    ``reports`` maps ``"json"``, ``"junit_xml"`` and ``"html"`` to files to write."""
    refuse_in_event_loop("run_suite()", "await arun_suite(...)")
    seed = new_seed() if seed is None else check_seed(seed)
    unknown = set(reports or {}) - {"json", "junit_xml", "html"}
    if unknown:
        raise ValueError(f"reports: unknown kind {sorted(unknown)[0]!r}; choose from json, "
                         "junit_xml, html")
    name = exchange.name if exchange is not None else "echo"
    out(f"fault-injection suite ({name}) against {address!r}, seed {seed}")
    report = SuiteReport(socket_address(address), seed, protocol=name)
    out(report.table())

    def show(row: SuiteRow) -> None:
        report.rows.append(row)
        out(format_row(row))

    command = replay.format(seed=seed) if replay else None
    final = run_server_checks(address, exchange, seed=seed, on_row=show, only=only,
                              command=command, **kwargs)
    failed = final.failures
    again = f": {command}" if command else ""
    if final.rows and final.rows[0].fault == "connect":
        out(f"FAILED: cannot run the suite against {address!r}: {final.rows[0].detail}")
    else:
        out(_where_time_went(final))
        if failed:
            out(f"FAILED: {len(failed)} of {len(final.rows)} checks; replay with seed "
                f"{seed}{again}")
        else:
            out(f"OK: all {len(final.rows)} checks passed (seed {seed})")
    for kind, path in (reports or {}).items():
        from pytest_multiconn.suite import reports as writers

        written = {"json": writers.write_json, "junit_xml": writers.write_junit_xml,
                   "html": writers.write_html}[kind](final, path)
        out(f"wrote {kind.replace('_', ' ')} report: {written}")
    return final.ok


def _where_time_went(report: SuiteReport) -> str:
    """One line: the whole run's time, the slowest rows, the settling between rows, and the
    processes measured."""
    rows = sorted(report.rows, key=lambda r: r.seconds, reverse=True)[:3]
    slowest = ", ".join(f"{r.fault} {r.seconds:.1f} s" for r in rows)
    settling = sum(r.settle_seconds for r in report.rows)
    pids = ", ".join(map(str, report.pids[:8])) or "none visible"
    return (f"time: {report.seconds:.1f} s in all; slowest rows: {slowest}; waiting for the "
            f"server to settle between rows: {settling:.1f} s; server pids measured: {pids}")


# -- awaitable twins (see core/blocking.py): the suite's clients run in a worker thread, so a
# server on the caller's event loop (asyncio or trio) keeps serving while it is checked.
async def acheck_server(address: Address, exchange: Exchange | None = None, **kwargs: Any
                        ) -> SuiteReport:
    """Awaitable twin of :func:`check_server` (needs ``pytest-multiconn[async]``)."""
    return await to_thread(check_server, address, exchange, **kwargs)


async def acheck_echo_server(address: Address, **kwargs: Any) -> SuiteReport:
    """Awaitable twin of :func:`check_echo_server`."""
    return await to_thread(check_echo_server, address, **kwargs)


async def arun_checks(address: Address, exchange: Exchange | None = None, **kwargs: Any
                      ) -> SuiteReport:
    """Awaitable twin of :func:`run_checks`."""
    return await to_thread(run_checks, address, exchange, **kwargs)


async def arun_check(name: str, address: Address, exchange: Exchange | None = None, **kwargs: Any
                     ) -> SuiteRow:
    """Awaitable twin of :func:`run_check`."""
    return await to_thread(run_check, name, address, exchange, **kwargs)


async def arun_suite(address: Address, *args: Any, **kwargs: Any) -> bool:
    """Awaitable twin of :func:`run_suite`."""
    return await to_thread(run_suite, address, *args, **kwargs)
