"""The suite's runner: validates what it is given, finds the server's processes, then runs
the rows one at a time on a quiet server.

One row at a time: rows that ran together blamed each other (a flood's slow reply blamed on
the slow reader, an idle server measured right after a flood called a spinner).  Before
each row the runner waits, bounded, until the server tree's CPU is back to idle, and says in
the row how long that took, or that it never settled.  Each row samples the tree's memory
and CPU while it runs (:class:`~pytest_multiconn.suite.measure.Sampler`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from pytest_multiconn.core.address import Address, SocketAddress, socket_address
from pytest_multiconn.core.checks import check_count, check_seed
from pytest_multiconn.exchanges.base import Exchange
from pytest_multiconn.exchanges.simple import Echo
from pytest_multiconn.suite.context import Context, Failed, RowRecord, Status, SuiteLimits
from pytest_multiconn.suite.measure import Sampler, ServerTree, find_tree, settle
from pytest_multiconn.suite.model import FAIL, PASS, SuiteReport, SuiteRow
from pytest_multiconn.suite.peers import PeerError, open_socket
from pytest_multiconn.suite.rows import ALWAYS, ROW_NAMES, ROWS, Check

#: The longest the setup requests may take to be answered.
SETUP_SECONDS = 2.0


def _names(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise TypeError(f"{what} must be a list of row names such as ['never_read'], got "
                        f"{value!r}")
    names = tuple(value)
    for name in names:
        if name not in ROW_NAMES:
            raise ValueError(f"unknown check {name!r} in {what}; choose from "
                             f"{', '.join(ROW_NAMES)}")
    return names


def _check_pid(pid: object) -> int | None:
    if pid is None:
        return None
    number = check_count(pid, "pid (a process id)", minimum=1)
    if not os.path.exists(f"/proc/{number}") and os.path.isdir("/proc"):
        raise ValueError(f"pid {number}: no such process (give the server's process id, or "
                         "leave pid out to find it from the listening port)")
    return number


def _check_setup(setup: object) -> tuple[bytes, ...]:
    if setup is None:
        return ()
    if isinstance(setup, str | bytes) or not isinstance(setup, Sequence):
        raise TypeError(f"setup must be a list of requests (bytes), got {setup!r}")
    out = []
    for item in setup:
        if not isinstance(item, bytes) or not item:
            raise TypeError(f"setup must be a list of non-empty bytes, got {item!r} in it")
        out.append(item)
    return tuple(out)


def _listening(address: SocketAddress, timeout: float) -> str | None:
    """None when something accepts connections at ``address``, else why not."""
    try:
        family = socket.AF_UNIX if isinstance(address, str) else (
            socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address if isinstance(address, str) else tuple(address[:2]))
    except ConnectionRefusedError:
        return "nothing listens there (connection refused)"
    except OSError as exc:
        return f"cannot connect: {type(exc).__name__}: {exc}"
    return None


def _send_setup(ctx: Context) -> str | None:
    """Send the setup requests once on one connection and read what comes back (bounded);
    None, or why it failed."""
    if not ctx.setup:
        return None
    try:
        with open_socket(ctx.address, ctx.tls, ctx.limits.timeout) as sock:
            sock.sendall(b"".join(ctx.setup))
            deadline = time.monotonic() + SETUP_SECONDS
            got = b""
            quiet = 0.2
            for _ in range(10_000):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(min(remaining, quiet) if got else remaining)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                got += chunk
            if not got:
                return f"the setup request(s) got no answer within {SETUP_SECONDS:.0f} s"
    except (OSError, PeerError) as exc:
        return f"setup failed: {type(exc).__name__}: {exc}"
    return None


def _run_row(name: str, check: Check, ctx: Context, settled: tuple[float, str | None]
             ) -> SuiteRow:
    started = time.monotonic()
    status = PASS
    with Sampler(ctx.tree) as sampler:
        ctx.row = RowRecord(sampler)
        if settled[1] is not None:
            ctx.row.note(settled[1])
        try:
            detail = check(ctx)
        except Failed as exc:
            detail, status = str(exc), FAIL
        except Status as exc:
            detail, status = str(exc), exc.status
        except (OSError, PeerError) as exc:
            detail, status = f"{type(exc).__name__}: {exc}{ctx.serial_cause()}", FAIL
    record = ctx.row
    ctx.row = None
    transcript = list(record.transcript)
    if record.dropped:
        transcript.append(f"... {record.dropped} more line(s) not kept")
    measurements = dict(record.measurements)
    if settled[0]:
        measurements.setdefault("settle_seconds", round(settled[0], 3))
    return SuiteRow(name, record.connections, record.bytes, status != FAIL,
                    time.monotonic() - started, detail, status,
                    measurements=measurements, transcript=tuple(transcript),
                    samples=tuple(sampler.samples), pids=tuple(sampler.pids_seen),
                    settle_seconds=settled[0])


def _dead(name: str) -> SuiteRow:
    return SuiteRow(name, 0, 0, False, 0.0, "not run: the server no longer accepts connections "
                    "(it died during an earlier check)", FAIL)


def run_server_checks(
    address: Address,
    exchange: Exchange | None = None,
    *,
    seed: int = 0,
    tls: Any = None,
    pid: int | None = None,
    limits: SuiteLimits | None = None,
    only: Sequence[str] | None = None,
    skip: Sequence[str] | None = None,
    setup: Sequence[bytes] | None = None,
    stop_on_failure: bool = False,
    on_row: Callable[[SuiteRow], None] | None = None,
    command: str | None = None,
) -> SuiteReport:
    """Run the rows (all, or ``only`` those named, less ``skip``) against the server at
    ``address`` speaking ``exchange`` (default :class:`~pytest_multiconn.exchanges.Echo`);
    never raises for a broken contract, returns the :class:`SuiteReport`.

    ``pid`` names the server's process when it cannot be found from the port; ``setup``
    requests are sent once before the rows (a memcached ``set`` of the key the rows get)."""
    address = socket_address(address)  # a path-like Unix socket path as the socket takes it
    exchange = Echo() if exchange is None else exchange
    if not isinstance(exchange, Exchange):
        raise TypeError(f"exchange must be an Exchange (see pytest_multiconn.exchanges), "
                        f"got {exchange!r}")
    check_seed(seed)
    wanted = set(_names(only, "only") or ROW_NAMES)
    skipped = set(_names(skip, "skip"))
    both = wanted & skipped if only is not None else set()
    if both:
        raise ValueError(f"row {sorted(both)[0]!r} is both in only= and in skip=")
    wanted -= skipped
    limits = limits or SuiteLimits()
    if not isinstance(limits, SuiteLimits):
        raise TypeError(f"limits must be a SuiteLimits, got {limits!r}")
    pid = _check_pid(pid)
    context = _client_context(tls, address)
    started = time.monotonic()
    tree: ServerTree = find_tree(address, pid)
    report = SuiteReport(address, seed, pid=tree.root, protocol=exchange.name,
                         pids=tuple(tree.pids()), command=command)
    ctx = Context(address, exchange, seed, limits, tree, context,
                  setup=_check_setup(setup))

    def emit(row: SuiteRow) -> None:
        report.rows.append(row)
        report.seconds = time.monotonic() - started
        if on_row is not None:
            on_row(row)

    down = _listening(address, limits.timeout)
    if down is None:
        down = _send_setup(ctx)
    if down is not None:
        emit(SuiteRow("connect", 0, 0, False, 0.0, down, FAIL))
        return report
    for name, check in ROWS:
        if name not in wanted and name not in ALWAYS:
            continue
        settled = settle(tree)
        dead = name not in ALWAYS and _listening(address, limits.timeout) is not None
        row = _dead(name) if dead else _run_row(name, check, ctx, settled)
        if name in wanted:
            emit(row)
        if stop_on_failure and not row.passed:
            break
    report.seconds = time.monotonic() - started
    return report


def _client_context(tls: Any, address: SocketAddress) -> Any:
    if tls is None:
        return None
    from pytest_multiconn.tls.config import client_tls

    return client_tls(tls, address).context
