"""The fault-injection suite: run every client fault against an echo-style server.

Pytest-free.  :func:`check_echo_server` raises :class:`ContractBreak` on the first broken
contract; :func:`run_checks` runs them all and returns a :class:`SuiteReport`;
:func:`run_suite` prints the table (``multiconn suite HOST PORT`` and ``make demo`` use it).

The contracts an echo server must keep, whatever its clients do:

* every byte comes back once, in order (no loss, reordering or duplication), whatever the
  chunking, pauses or payload bytes;
* after a client's half-close the server sends the rest of the echo, then closes;
* one slow or stuck client does not starve the others;
* a client that never reads does not make the server buffer without bound;
* idle connections cost no CPU (a server that spins is found by its CPU time);
* resets, bursts and instant closes do not stop it serving everyone else.

The CPU and buffer measurements need Linux ``/proc`` and a server on this machine (see
:mod:`pytest_multiconn.suite.probes`); elsewhere those rows fall back to coarser evidence
and say so.
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_multiconn.client.multiconn import ClientResults, MultiConnClient
from pytest_multiconn.core.seed import derive_seed
from pytest_multiconn.errors import ContractBreak, MulticonnError
from pytest_multiconn.faults.client import (
    Burst,
    ClientFault,
    ClientReset,
    ConnectClose,
    Garbage,
    HalfClose,
    NeverClose,
    NeverRead,
    PartialSend,
    Silent,
    SlowReader,
)
from pytest_multiconn.suite.probes import (
    LatencyProbe,
    cpu_seconds,
    listener_pid,
    preemptions,
    server_held_bytes,
)

__all__ = [
    "CHECKS",
    "ContractBreak",
    "SuiteLimits",
    "SuiteReport",
    "SuiteRow",
    "check_echo_server",
    "run_checks",
    "run_suite",
]


@dataclass(frozen=True)
class SuiteLimits:
    """The bounds the suite holds a server to (generous: a loaded CI box must pass)."""

    #: Bytes a server may hold in user space for a client that never reads.
    max_held: int = 1024 * 1024
    #: Share of one CPU an idle server may use while its connections sit idle.
    max_idle_cpu: float = 0.25
    #: Preemptions of an idle server within the 0.5 s idle window (a spinner has dozens).
    max_idle_preemptions: int = 20
    #: Worst echo round trip another client may see while one misbehaves.
    max_probe_latency: float = 1.0
    #: Timeout of each client run.
    timeout: float = 20.0


@dataclass(frozen=True)
class SuiteRow:
    """One check: which fault, how many connections and bytes, whether it held, and why not."""

    fault: str
    connections: int
    bytes: int
    passed: bool
    seconds: float
    detail: str = ""

    @property
    def result(self) -> str:
        return "pass" if self.passed else "FAIL"


@dataclass
class SuiteReport:
    """All rows of one suite run against ``address`` with ``seed``."""

    address: Any
    seed: int
    rows: list[SuiteRow] = field(default_factory=list)
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[SuiteRow]:
        return [r for r in self.rows if not r.passed]

    def table(self) -> str:
        head = f"{'fault':<16} {'conns':>6} {'bytes':>11} {'result':<6} {'time':>9}  detail"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.fault:<16} {r.connections:>6} {r.bytes:>11} {r.result:<6} "
                f"{r.seconds * 1e3:>7.0f}ms  {r.detail}"
            )
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`ContractBreak` naming every failed row."""
        failed = self.failures
        if failed:
            reasons = "\n".join(f"  {r.fault}: {r.detail}" for r in failed)
            raise ContractBreak(
                f"echo server at {self.address!r} broke {len(failed)} contract(s) "
                f"(seed {self.seed}; rerun with the same seed to replay):\n{reasons}"
            )


class _Failed(Exception):
    """A check's verdict: the contract it broke, in words."""


@dataclass
class _Context:
    address: Any
    seed: int
    limits: SuiteLimits
    pid: int | None
    client_kwargs: dict[str, Any]
    connections: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def client(
        self, n: int, faults: Sequence[ClientFault], label: str, **kwargs: Any
    ) -> MultiConnClient:
        kwargs.setdefault("timeout", self.limits.timeout)
        return MultiConnClient(
            self.address,
            n,
            faults=list(faults),
            seed=derive_seed(self.seed, label),
            **self.client_kwargs,
            **kwargs,
        )

    def run(
        self, n: int, faults: Sequence[ClientFault], label: str, **kwargs: Any
    ) -> ClientResults:
        with self.client(n, faults, label, **kwargs) as client:
            results = client.run()
        self.count(results)
        return results

    def count(self, results: ClientResults) -> None:
        self.connections += len(results)
        self.bytes += sum(r.sent for r in results)

    def expect_ok(self, results: ClientResults, what: str) -> None:
        failed = results.failed
        if failed:
            first = failed[0]
            raise _Failed(f"{len(failed)}/{len(results)} {what} failed; first: {first}")


def _probe_ok(ctx: _Context, probe: LatencyProbe, while_what: str) -> None:
    if probe.error is not None:
        raise _Failed(f"another client could not be served while {while_what}: {probe.error}")
    if not probe.trips:
        raise _Failed(f"another client got no echo at all while {while_what} (starved)")
    if probe.worst > ctx.limits.max_probe_latency:
        raise _Failed(
            f"another client was starved while {while_what}: an echo took "
            f"{probe.worst * 1e3:.0f} ms (limit {ctx.limits.max_probe_latency * 1e3:.0f} ms)"
        )


# --- the checks ---------------------------------------------------------------------------


def _check_echo(ctx: _Context) -> str:
    results = ctx.run(8, [Garbage(16 * 1024)], "echo")
    ctx.expect_ok(results, "plain connections (16 KiB random bytes each)")
    return "8 connections echoed 16 KiB each"


def _check_partial_send(ctx: _Context) -> str:
    one = ctx.run(4, [Garbage(4 * 1024), PartialSend(max_chunk=1)], "partial-1")
    ctx.expect_ok(one, "connections sending 1 byte per send()")
    paced_faults = [Garbage(16 * 1024), PartialSend(max_chunk=128, delay=0.002)]
    paced = ctx.run(4, paced_faults, "partial-paced")
    ctx.expect_ok(paced, "connections sending 1..128 byte chunks with random pauses")
    sends = sum(len(r.send_sizes) for r in (*one, *paced))
    return f"byte-exact over {sends} partial sends"


def _check_slow_reader(ctx: _Context) -> str:
    with LatencyProbe(ctx.address, tls=ctx.client_kwargs.get("tls")) as probe:
        results = ctx.run(2, [Garbage(512 * 1024), SlowReader(2 * 1024 * 1024)], "slow")
    ctx.expect_ok(results, "slow readers (2 MiB/s)")
    _probe_ok(ctx, probe, "two clients read slowly")
    return f"other clients' worst echo {probe.worst * 1e3:.1f} ms"


def _check_never_read(ctx: _Context) -> str:
    fault = NeverRead(size=64 * 1024 * 1024, stall=0.3, duration=3.0)
    client = ctx.client(1, [fault], "never-read", keep_open=True)
    with LatencyProbe(ctx.address, tls=ctx.client_kwargs.get("tls")) as probe, client:
        results = client.run()
        ctx.count(results)
        conn = client.connections[0]
        held = None if conn.closed else server_held_bytes(conn.sock, conn.bytes_out, conn.received)
        first = held
        if held is not None:
            # A slow server that reads without bound can look stalled for a moment: look again.
            _quiet(0.5)
            held = server_held_bytes(conn.sock, conn.bytes_out, conn.received)
    ctx.expect_ok(results, "never-reading clients")
    note = results[0].note
    if held is not None and first is not None and held > first + ctx.limits.max_held // 4:
        raise _Failed(
            f"buffers without bound: it keeps reading from a client that never reads (it held "
            f"{first} B, then {held} B half a second later; {note})"
        )
    if held is not None and held > ctx.limits.max_held:
        raise _Failed(
            f"buffers without bound: it holds {held} B read from a client that never reads "
            f"(limit {ctx.limits.max_held} B; {note})"
        )
    if held is None and "still sending" in note:
        raise _Failed(f"buffers without bound: {note}")
    _probe_ok(ctx, probe, "one client never read")
    shown = "not measurable here" if held is None else f"{held} B"
    return f"held {shown} for the never-reading client; {note.split('; ')[-1]}"


def _check_idle(ctx: _Context) -> str:
    silent = ctx.client(16, [Silent()], "silent", keep_open=True)
    stay = ctx.client(16, [NeverClose()], "never-close", keep_open=True)
    with silent, stay:
        ctx.expect_ok(silent.run(), "silent connections")
        results = stay.run()
        ctx.count(results)
        ctx.connections += 16
        ctx.expect_ok(results, "never-closing connections")
        echo = ctx.run(4, [], "idle-probe", messages=[b"still serving?"])
        ctx.expect_ok(echo, "connections made while 32 others sat idle")
        if ctx.pid is None:
            return "32 idle connections held; CPU not measurable here"
        before_cpu, before_pre = cpu_seconds(ctx.pid), preemptions(ctx.pid)
        before = time.monotonic()
        # Measure over a quiet window: nothing in this process runs meanwhile.
        _quiet(0.5)
        after_cpu, after_pre = cpu_seconds(ctx.pid), preemptions(ctx.pid)
        wall = time.monotonic() - before
        if before_cpu is None or after_cpu is None:
            return "32 idle connections held; CPU not measurable here"
        share = (after_cpu - before_cpu) / wall
        preempted = 0
        if after_pre is not None and before_pre is not None:
            preempted = after_pre - before_pre
        # CPU share alone misses a spinner on a busy machine (it gets little CPU); being
        # preempted again and again means it always wanted more.  An idle loop is neither.
        if share > ctx.limits.max_idle_cpu or preempted >= ctx.limits.max_idle_preemptions:
            raise _Failed(
                f"it spins: {share:.0%} of a CPU and preempted {preempted} times in "
                f"{wall * 1e3:.0f} ms with 32 idle connections open (limits "
                f"{ctx.limits.max_idle_cpu:.0%}, {ctx.limits.max_idle_preemptions}); a loop that "
                "always asks for EVENT_WRITE does this"
            )
        return f"32 idle connections cost {share:.1%} of a CPU, {preempted} preemptions"


def _quiet(seconds: float) -> None:
    import threading

    # An Event nobody sets: a bounded wait that uses no CPU, which is what we measure.
    threading.Event().wait(seconds)


def _check_half_close(ctx: _Context) -> str:
    # The reader waits before its first read, so a server that reads without bound has taken
    # the whole payload (and our EOF) while its echo is still queued in memory: closing at EOF
    # then drops that queue.  A server with backpressure just makes us wait.
    faults = [
        Garbage(6 * 1024 * 1024),
        PartialSend(max_chunk=64 * 1024),
        SlowReader(8 * 1024 * 1024, delay=0.5, rcvbuf=16 * 1024),
        HalfClose(),
    ]
    results = ctx.run(2, faults, "half-close")
    failed = results.failed
    if failed:
        raise _Failed(f"{failed[0].error or 'echo differed'} (connection {failed[0].conn_id})")
    return "full 6 MiB echo, then EOF, after partial sends and a half-close"


def _check_reset(ctx: _Context) -> str:
    for at in ("before", "mid", "after"):
        rst = ctx.run(2, [Garbage(8 * 1024), ClientReset(at)], f"reset-{at}")
        if not rst.ok:
            raise _Failed(f"a client's RST {at} sending failed: {rst.failed[0]}")
    echo = ctx.run(8, [Garbage(8 * 1024)], "after-reset")
    ctx.expect_ok(echo, "connections after 6 resets (before, mid-message, after sending)")
    return "kept serving after RSTs before, mid-message and after sending"


def _check_garbage(ctx: _Context) -> str:
    results = ctx.run(8, [Garbage(64 * 1024)], "garbage")
    ctx.expect_ok(results, "connections sending 64 KiB of random binary")
    return "every byte value echoed exactly"


def _check_burst(ctx: _Context) -> str:
    results = ctx.run(1, [Burst(256)], "burst")
    ctx.expect_ok(results, "connections of a 256-connection burst")
    slowest = max(r.elapsed for r in results)
    return f"256 at once; slowest {slowest * 1e3:.0f} ms"


def _check_connect_close(ctx: _Context) -> str:
    closes = ctx.run(64, [ConnectClose()], "connect-close")
    ctx.expect_ok(closes, "connect-then-close connections")
    echo = ctx.run(4, [], "after-connect-close")
    ctx.expect_ok(echo, "connections after 64 instant closes")
    return "64 instant closes, then normal service"


Check = Callable[[_Context], str]

#: The suite's checks in order: (name, check).  The name is the row's fault column.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("echo", _check_echo),
    ("partial_send", _check_partial_send),
    ("slow_reader", _check_slow_reader),
    ("never_read", _check_never_read),
    ("silent+never_close", _check_idle),
    ("half_close", _check_half_close),
    ("garbage", _check_garbage),
    ("burst", _check_burst),
    ("connect_close", _check_connect_close),
    ("reset", _check_reset),  # last: a server that dies on RST fails no row but this one
)

CHECK_NAMES = tuple(name for name, _ in CHECKS)


def _tls_kwargs(tls: Any) -> dict[str, Any]:
    if tls is None:
        return {}
    if "tls" not in inspect.signature(MultiConnClient).parameters:
        raise ValueError("tls= needs a MultiConnClient with TLS support, which this build lacks")
    return {"tls": tls}


def run_check(
    name: str,
    address: Any,
    *,
    seed: int = 0,
    tls: Any = None,
    pid: int | None = None,
    limits: SuiteLimits | None = None,
) -> SuiteRow:
    """Run one named check (see :data:`CHECK_NAMES`) and return its row (``pid`` defaults to
    the process found listening on ``address``)."""
    checks = dict(CHECKS)
    if name not in checks:
        raise ValueError(f"unknown check {name!r}; choose from {', '.join(CHECK_NAMES)}")
    if pid is None:
        pid = listener_pid(address)
    ctx = _Context(address, seed, limits or SuiteLimits(), pid, _tls_kwargs(tls))
    started = time.monotonic()
    try:
        detail = checks[name](ctx)
        passed = True
    except _Failed as exc:
        detail, passed = str(exc), False
    except (OSError, MulticonnError) as exc:
        detail, passed = f"{type(exc).__name__}: {exc}", False
    if not passed and "ConnectionRefusedError" in detail:
        detail = f"the server refuses connections (did it die in an earlier check?): {detail}"
    return SuiteRow(name, ctx.connections, ctx.bytes, passed, time.monotonic() - started, detail)


def run_checks(
    address: Any,
    *,
    seed: int = 0,
    tls: Any = None,
    pid: int | None = None,
    limits: SuiteLimits | None = None,
    only: Sequence[str] | None = None,
    stop_on_failure: bool = False,
    on_row: Callable[[SuiteRow], None] | None = None,
) -> SuiteReport:
    """Run the checks (all, or ``only`` those named) against ``address``; never raises for a
    broken contract, returns the :class:`SuiteReport`.

    ``pid`` is the server's process for the CPU check; by default it is looked up from the
    listening port (Linux, same user).  ``seed`` fixes every random choice.
    """
    if pid is None:
        pid = listener_pid(address)
    report = SuiteReport(address, seed, pid=pid)
    names = CHECK_NAMES if only is None else tuple(only)
    for name in names:
        row = run_check(name, address, seed=seed, tls=tls, pid=pid, limits=limits)
        report.rows.append(row)
        if on_row is not None:
            on_row(row)
        if stop_on_failure and not row.passed:
            break
    return report


def check_echo_server(
    address: Any,
    *,
    seed: int = 0,
    tls: Any = None,
    pid: int | None = None,
    limits: SuiteLimits | None = None,
) -> SuiteReport:
    """Run every client fault against the echo server at ``address``; raise
    :class:`ContractBreak` on the first broken contract, else return the report."""
    report = run_checks(address, seed=seed, tls=tls, pid=pid, limits=limits, stop_on_failure=True)
    report.raise_for_failures()
    return report


def run_suite(
    address: Any,
    seed: int | None = None,
    out: Callable[[str], object] = print,
    **kwargs: Any,
) -> bool:
    """Run the suite, printing the table row by row to ``out``; True if every row passed."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    out(f"fault-injection suite against {address!r}, seed {seed}")
    report = SuiteReport(address, seed)
    header = report.table()
    out(header)

    def show(row: SuiteRow) -> None:
        report.rows.append(row)
        out(report.table().splitlines()[-1])

    final = run_checks(address, seed=seed, on_row=show, **kwargs)
    failed = final.failures
    if failed:
        out(f"FAILED: {len(failed)} of {len(final.rows)} checks; replay with seed {seed}")
    else:
        out(f"OK: all {len(final.rows)} checks passed")
    return final.ok
