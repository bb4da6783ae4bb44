"""Server-side faults: an echo server that misbehaves on purpose, for testing clients.

:class:`FaultyEchoServer` is an :class:`~pytest_multiconn.EchoServer` that applies a list of
fault objects (``FaultyEchoServer(faults=[DelayEcho(0.1), ChunkedEcho(3)])``).  Each fault is a
small named object whose docstring says what it does and what the client under test observes.
Faults compose: delays add up, send caps take the smallest, any stall wins.  ``set_faults()``
swaps them while the server runs.

How the faults act on a connection, all in the server's loop thread and without ever sleeping
in it:

* an *echo delay* (``DelayEcho``) parks each received chunk in a per-connection queue with a
  due time, and a loop timer releases it.  Due times never decrease, so bytes never overtake
  each other; while more than ``high_water`` bytes wait in the queue the connection stops
  reading, so a client that floods a slow echo fills its own send buffer, not our memory;
* a *send cap* (``ChunkedEcho``, ``CloseAfter``, ``ResetAfter``) limits the bytes handed to
  each send through the connection's ``send_allowance()`` hook (``after_send()`` sees what
  left), on plaintext above any TLS layer, so over TLS each chunk is one record; a pause
  between chunks holds the connection's output with ``hold_output()`` and a timer releases it;
* a *cut* (``CloseAfter``, ``ResetAfter``, ``AcceptThenClose``) closes or resets from a loop
  callback, after exactly the promised bytes went out;
* ``StopAccepting`` is a listener fault: the server stops calling ``accept()``.

Every random choice (chunk sizes, jitter) comes from ``random.Random`` seeded from the server's
``seed`` (default: the run seed), the connection's accept number and the fault's position, so
the same seed replays the same chunk boundaries.  :meth:`FaultyEchoServer.fault_events` lists
what the faults did (each chunk sent, each cut), for tests that assert on it.
"""

from __future__ import annotations

import random
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pytest_multiconn.core.checks import check_count
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Timer
from pytest_multiconn.core.seed import get_run_seed
from pytest_multiconn.faults import params as checks
from pytest_multiconn.faults.api import ServerConnectionAPI
from pytest_multiconn.faults.base import Fault, Registry
from pytest_multiconn.faults.params import param
from pytest_multiconn.servers.echo import EchoConnection, EchoServer

#: How many fault events a server keeps (the oldest are dropped first).
FAULT_EVENT_LIMIT = 10_000

#: How long ``ResetAfter`` waits for its bytes to leave the kernel before resetting anyway.
RESET_DRAIN_TIMEOUT = 2.0

# Linux: ioctl(SIOCOUTQ) gives the bytes in a TCP socket's send queue, not yet acknowledged by
# the peer.  An RST from close() with SO_LINGER 0 discards that queue, so ResetAfter waits for
# it to drain first; elsewhere it resets at once (the echoed bytes are usually gone already).
_SIOCOUTQ = 0x5411 if sys.platform.startswith("linux") else None


def _unsent_bytes(sock: socket.socket) -> int:
    if _SIOCOUTQ is None:
        return 0
    import fcntl
    import struct

    try:
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One thing a fault did: ``action`` on connection number ``conn`` (1 = first accepted).

    A server keeps up to ``fault_event_limit`` of them (FAULT_EVENT_LIMIT by default), so each
    is small: slots (no ``__dict__``) and the fault's name interned, one string for every event
    of the same fault: 148 B an event instead of 262 (tracemalloc, ``ChunkedEcho(3)``), so a
    full default history is 1.4 MiB (the soak had seen it filling as growth of the server
    process)."""

    conn: int
    fault: str
    action: str  # "send", "close", "reset", "stall", "drop"
    size: int
    when: float

    def __str__(self) -> str:
        return f"conn {self.conn}: {self.fault} {self.action} {self.size} B"


@dataclass(frozen=True, repr=False)
class ServerFault(Fault):
    """Base class of server-side faults; a :class:`FaultyEchoServer` applies a list of them.

    A subclass returns a per-connection :class:`ServerFaultSession` from :meth:`open`, and may
    set ``accepting = False`` to stop the listener while it is installed.  ``probability`` is
    the chance (a seeded draw per connection) that a connection gets it.
    """

    family: ClassVar[str] = "server"
    name: ClassVar[str] = "server_fault"
    #: False makes the server stop calling accept() while this fault is installed.
    accepting: ClassVar[bool] = True

    def open(self, conn: ServerConnectionAPI, rng: random.Random) -> ServerFaultSession | None:
        """The fault's state for one connection (``None``: this fault does not touch it)."""
        return None

    def listen_backlog(self) -> int | None:
        """A listen backlog to use while this fault is installed (``None``: leave it)."""
        return None


#: Server faults by name.
SERVER_FAULTS: Registry[ServerFault] = Registry("server")


class ServerFaultSession:
    """One fault's hooks and state on one connection (all called in the loop thread).

    ``conn`` is the :class:`~pytest_multiconn.faults.ServerConnectionAPI` of the connection.
    """

    #: True: received data is dropped and nothing is ever echoed or closed by us.
    stalls = False

    def __init__(self, fault: ServerFault, conn: ServerConnectionAPI, rng: random.Random) -> None:
        self.fault = fault
        self.conn = conn
        self.rng = rng
        self.detached = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fault!r} on connection {self.conn.number}>"

    def made(self) -> None:
        """The connection was accepted (or the fault was installed on a live connection)."""

    def echo_delay(self) -> float:
        """Seconds to hold one received chunk before it is echoed."""
        return 0.0

    def send_limit(self) -> int | None:
        """The most bytes the next ``send()`` may carry (``None``: no limit)."""
        return None

    def sent(self, size: int) -> None:
        """``size`` bytes just left in one ``send()``."""

    def detach(self) -> None:
        """The fault was removed or the connection closed: cancel timers, release holds."""
        self.detached = True
        self.conn.release(self)


# -- the faults ------------------------------------------------------------------------------


@SERVER_FAULTS.register
@dataclass(frozen=True, repr=False)
class DelayEcho(ServerFault):
    """Echo each received chunk ``seconds`` later (plus up to ``jitter`` more, seeded).

    The client sees each echo no sooner than ``seconds`` after sending; bytes never reorder.
    """

    name = "delay_echo"
    quick: ClassVar[Mapping[str, Any]] = {"seconds": 0.05}

    seconds: float = param(check=checks.seconds())
    jitter: float = param(0.0, checks.seconds())

    def check(self) -> None:
        if self.seconds + self.jitter > checks.EPOLL_MAX_SECONDS:
            raise checks.fail("DelayEcho", "seconds + jitter", self.seconds + self.jitter,
                              f"at most {checks.EPOLL_MAX_SECONDS} (the longest timer the loop "
                              "can wait for)")

    def open(self, conn: ServerConnectionAPI, rng: random.Random) -> ServerFaultSession:
        return _Delayed(self, conn, rng)


class _Delayed(ServerFaultSession):
    fault: DelayEcho

    def echo_delay(self) -> float:
        fault = self.fault
        return fault.seconds + (self.rng.uniform(0.0, fault.jitter) if fault.jitter else 0.0)


@SERVER_FAULTS.register
@dataclass(frozen=True, repr=False)
class ChunkedEcho(ServerFault):
    """Echo in chunks of 1..``max_chunk`` bytes (seeded sizes), one send() each, ``delay`` apart.

    The client gets the exact bytes in order, but spread over many small ``recv()`` results.
    """

    name = "chunked_echo"
    quick: ClassVar[Mapping[str, Any]] = {"max_chunk": 3}

    max_chunk: int = param(check=checks.integer(1))
    delay: float = param(0.0, checks.seconds())

    def open(self, conn: ServerConnectionAPI, rng: random.Random) -> ServerFaultSession:
        return _Chunked(self, conn, rng)


class _Chunked(ServerFaultSession):
    fault: ChunkedEcho

    def __init__(self, fault: ServerFault, conn: ServerConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        self._next: int | None = None
        self._timer: Timer | None = None

    def send_limit(self) -> int:
        # Draw a size once and keep it until a send succeeds, so a send the kernel refused
        # (EAGAIN) does not consume a random number and the sequence stays reproducible.
        if self._next is None:
            self._next = self.rng.randint(1, self.fault.max_chunk)
        return self._next

    def sent(self, size: int) -> None:
        self._next = None
        self.conn.record(self.fault, "send", size)
        if self.fault.delay > 0 and not self.detached:
            self.conn.hold(self)
            self._timer = self.conn.loop.call_later(self.fault.delay, self._resume)

    def _resume(self) -> None:
        self._timer = None
        self.conn.release(self)

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().detach()


@SERVER_FAULTS.register
@dataclass(frozen=True, repr=False)
class Stall(ServerFault):
    """Accept, then never answer: read and drop the data (``read=False``: stop reading too).

    The client's recv() times out; with ``read=False`` its sends block once the buffers fill.
    """

    name = "stall"

    read: bool = param(True, checks.flag())

    def open(self, conn: ServerConnectionAPI, rng: random.Random) -> ServerFaultSession:
        return _Stalled(self, conn, rng)


class _Stalled(ServerFaultSession):
    fault: Stall
    stalls = True

    def made(self) -> None:
        self.conn.record(self.fault, "stall", 0)
        self.conn.note(f"{self.fault!r}: never answering")
        if not self.fault.read:
            self.conn.stop_reading(True)

    def detach(self) -> None:
        if not self.fault.read:
            self.conn.stop_reading(False)
        super().detach()


class _Cut(ServerFaultSession):
    """Shared by CloseAfter and ResetAfter: cap sends at the remaining bytes, then cut."""

    limit: int

    def __init__(self, fault: ServerFault, conn: ServerConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        self.count = 0
        self.cutting = False

    def send_limit(self) -> int:
        remaining = self.limit - self.count
        if remaining <= 0:
            self._start_cut()
        return max(remaining, 0)

    def sent(self, size: int) -> None:
        self.count += size
        if self.count >= self.limit:
            self._start_cut()

    def _start_cut(self) -> None:
        if self.cutting or self.detached:
            return
        self.cutting = True
        # Hold the output so nothing more is sent, and cut from a callback: we may be inside
        # Connection.write() or _on_writable(), which must not find the socket closed.  A
        # graceful close already planned (the client sent EOF) must not pre-empt the cut.
        self.conn.hold(self)
        self.conn.cancel_finish()
        self.conn.loop.call_soon(self._cut)

    def _cut(self) -> None:
        raise NotImplementedError


@SERVER_FAULTS.register
@dataclass(frozen=True, repr=False)
class CloseAfter(ServerFault):
    """Echo exactly ``n_bytes`` in all, then close the connection (a FIN, no RST).

    The client reads those ``n_bytes`` and then end-of-file (``recv()`` returns ``b""``).
    """

    name = "close_after"
    quick: ClassVar[Mapping[str, Any]] = {"n_bytes": 5}

    n_bytes: int = param(check=checks.integer(0))

    def open(self, conn: ServerConnectionAPI, rng: random.Random) -> ServerFaultSession:
        return _Closer(self, conn, rng)


class _Closer(_Cut):
    fault: CloseAfter

    def __init__(self, fault: CloseAfter, conn: ServerConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        self.limit = fault.n_bytes

    def _cut(self) -> None:
        conn = self.conn
        if conn.closed or self.detached:
            return
        conn.record(self.fault, "close", self.count)
        conn.note(f"{self.fault!r}: closing after {self.count} B")
        # The shutdown queues the FIN (under TLS: close_notify, then the FIN) behind the
        # echoed bytes whatever close() does next (it sends an RST instead if the client sent
        # more that we never read: RFC 2525, 2.17).
        conn.end_output()
        conn.close(reason=f"{self.fault!r}")


@SERVER_FAULTS.register
@dataclass(frozen=True, repr=False)
class ResetAfter(ServerFault):
    """The *server* echoes exactly ``n_bytes`` in all, then resets the connection (RST, via
    SO_LINGER 0).  (The client resetting itself is ``ClientReset``; the proxy resetting both
    ends after a time is ``ResetPeer``.)

    The client reads those ``n_bytes``, then ``recv()`` raises ``ConnectionResetError``.
    """

    name = "reset_after"
    quick: ClassVar[Mapping[str, Any]] = {"n_bytes": 5}

    n_bytes: int = param(check=checks.integer(0))

    def open(self, conn: ServerConnectionAPI, rng: random.Random) -> ServerFaultSession:
        return _Resetter(self, conn, rng)


class _Resetter(_Cut):
    fault: ResetAfter

    def __init__(self, fault: ResetAfter, conn: ServerConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        self.limit = fault.n_bytes
        self._deadline: float | None = None
        self._timer: Timer | None = None

    def _cut(self) -> None:
        self._timer = None
        conn = self.conn
        if conn.closed or self.detached:
            return
        # The RST throws away whatever the kernel has not yet delivered, so wait (bounded,
        # on a timer) until the echoed bytes are acknowledged by the client's kernel.
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + RESET_DRAIN_TIMEOUT
        if _unsent_bytes(conn.sock) > 0 and now < self._deadline:
            self._timer = conn.loop.call_later(0.001, self._cut)
            return
        conn.record(self.fault, "reset", self.count)
        conn.note(f"{self.fault!r}: resetting after {self.count} B")
        conn.reset()

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().detach()


@SERVER_FAULTS.register
@dataclass(frozen=True, repr=False)
class AcceptThenClose(ServerFault):
    """Accept each connection and close it at once, before reading (``reset=True``: RST).

    The client's connect succeeds; its first recv() returns ``b""`` (or raises
    ``ConnectionResetError`` with ``reset=True``, or if it had sent data first).

    The kernel completes the handshake before the server accepts, so connect() normally
    succeeds.  With ``reset=True`` the RST can arrive before a non-blocking connect (or one
    with a timeout) has collected its result, and then connect() itself raises
    ``ConnectionResetError``; a client must handle both places.
    """

    name = "accept_then_close"

    reset: bool = param(False, checks.flag())

    def open(self, conn: ServerConnectionAPI, rng: random.Random) -> ServerFaultSession:
        return _Rejecter(self, conn, rng)


class _Rejecter(ServerFaultSession):
    fault: AcceptThenClose

    def made(self) -> None:
        # From a callback, so the server's accept bookkeeping (and observers) see the
        # connection open before it closes; no read happens in between.
        self.conn.hold(self)
        self.conn.loop.call_soon(self._close)

    def _close(self) -> None:
        conn = self.conn
        if conn.closed or self.detached:
            return
        if self.fault.reset:
            conn.record(self.fault, "reset", 0)
            conn.note(f"{self.fault!r}: resetting at once")
            conn.reset()
        else:
            conn.record(self.fault, "close", 0)
            conn.close(reason=f"{self.fault!r}")


@SERVER_FAULTS.register
@dataclass(frozen=True, repr=False)
class StopAccepting(ServerFault):
    """The listener stops calling accept(); ``backlog=n`` also shrinks its queue to ``n``.

    Clients queue in the kernel until the backlog is full, then connect() hangs to its timeout.

    What a client sees, on Linux: the kernel completes the handshake by itself for up to
    ``backlog + 1`` connections, so their ``connect()`` *succeeds* and their data is accepted
    into the server's receive buffer, but nothing is ever answered.  Once that queue is full,
    new SYNs are dropped without a reply (``net.ipv4.tcp_abort_on_overflow`` is 0 by default),
    the client's kernel retransmits them for about two minutes, and ``connect()`` blocks until
    the client's own timeout (``TimeoutError``), never ``ConnectionRefusedError``.  macOS and
    the BSDs behave alike; Windows may answer with a RST.  Remove the fault (``set_faults``)
    and the queued connections are accepted and served.
    """

    name = "stop_accepting"
    accepting = False

    backlog: int | None = param(None, checks.optional(checks.integer(0)))

    def listen_backlog(self) -> int | None:
        return self.backlog


# -- the server ------------------------------------------------------------------------------


def _check_faults(faults: Iterable[ServerFault]) -> tuple[ServerFault, ...]:
    if isinstance(faults, ServerFault):
        return (faults,)
    items = tuple(faults)
    for item in items:
        if not isinstance(item, ServerFault):
            raise TypeError(
                f"faults must be ServerFault objects such as DelayEcho(0.1) or ChunkedEcho(3), "
                f"got {item!r}; client-side faults go on the client, not the server"
            )
    return items


class FaultyEchoConnection(EchoConnection):
    """An echo connection that routes its echo through the server's faults."""

    server: FaultyEchoServer

    def __init__(
        self, server: FaultyEchoServer, sock: socket.socket, addr: Any, number: int
    ) -> None:
        super().__init__(server, sock, addr)
        #: Accept order on this server (1 = first): with the seed, it picks the random numbers.
        self.number = number
        self._faults: list[ServerFaultSession] = []
        self._pending: deque[tuple[float, bytes]] = deque()
        self._pending_bytes = 0
        self._pending_timer: Timer | None = None
        self._pending_full = False  # over the high-water mark: reading paused
        self._out_full = False  # the kernel is not taking our output: reading paused
        self._no_read = False  # Stall(read=False)
        self._holds: set[object] = set()
        self._eof_after_pending = False

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        faults = ", ".join(repr(f.fault) for f in self._faults) or "none"
        return f"{base} pending={self._pending_bytes} faults=[{faults}]>"

    # -- fault plumbing (loop thread) ---------------------------------------------------------
    def _install(self, faults: tuple[ServerFault, ...], *, live: bool) -> None:
        for old in self._faults:
            old.detach()
        self._faults = []
        seed = self.server.seed
        for index, fault in enumerate(faults):
            if not fault.applies(seed, self.number, index):
                continue
            active = fault.open(self, fault.rng(seed, self.number, index))
            if active is not None:
                self._faults.append(active)
        if live:
            for active in list(self._faults):
                if not self.closed:
                    active.made()
            # The peer's EOF came while a stall swallowed it: with the stall gone, handle it
            # now, or the connection stays open forever (found by benchmarks/soak.py).
            if self.eof_received and not self.closed and not self.stalled:
                self.on_eof()

    # -- what a fault session may ask (ServerConnectionAPI) ----------------------------------
    def hold(self, owner: object) -> None:
        if not self._holds:
            self.hold_output()
        self._holds.add(owner)

    def release(self, owner: object) -> None:
        if owner in self._holds:
            self._holds.discard(owner)
            if not self._holds:
                self.release_output()

    def cancel_finish(self) -> None:
        super().cancel_finish()
        self._eof_after_pending = False

    def stop_reading(self, stopped: bool) -> None:
        self._no_read = stopped
        self._sync_reading()

    def record(self, fault: object, action: str, size: int = 0) -> None:
        self.server._fault_events.append(
            FaultEvent(self.number, sys.intern(repr(fault)), action, size, time.monotonic())
        )
        self.server.notify()

    def note(self, text: str) -> None:
        self.transcript.record("note", note=text)

    def _sync_reading(self) -> None:
        if self._out_full or self._pending_full or self._no_read:
            self.pause_reading()
        else:
            self.resume_reading()

    @property
    def stalled(self) -> bool:
        return any(f.stalls for f in self._faults)

    # -- hooks --------------------------------------------------------------------------------
    def connection_made(self) -> None:
        for active in list(self._faults):
            if self.closed:
                return
            active.made()

    def data_received(self, data: bytes) -> None:
        if self._observer is not None:
            self._observer("data", self, data)
        staller = next((f for f in self._faults if f.stalls), None)
        if staller is not None:
            self.record(staller.fault, "drop", len(data))
        else:
            self._handle(data)
        self.server.notify()

    def _reply(self, data: bytes) -> None:
        """Send ``data`` through the faults: delayed if a fault delays, else at once."""
        delay = 0.0
        for active in self._faults:
            delay += active.echo_delay()
        if delay <= 0.0 and not self._pending:
            self.write(data)
        else:
            self._defer(data, delay)

    #: What the connection does with data no fault dropped: echo it (the protocol server's
    #: connection hands it to its handler instead, which replies through ``emit()``).
    _handle = _reply

    def _defer(self, data: bytes, delay: float) -> None:
        due = time.monotonic() + delay
        if self._pending and self._pending[-1][0] > due:
            due = self._pending[-1][0]  # never let a shorter (jittered) delay overtake
        self._pending.append((due, data))
        self._pending_bytes += len(data)
        if self._pending_bytes > self.high_water and not self._pending_full:
            self._pending_full = True
            self._sync_reading()
        if self._pending_timer is None:
            self._pending_timer = self.loop.call_at(self._pending[0][0], self._release_pending)

    def _release_pending(self) -> None:
        self._pending_timer = None
        now = time.monotonic()
        pending = self._pending
        while pending and pending[0][0] <= now and not self.closed:
            _, data = pending.popleft()
            self._pending_bytes -= len(data)
            self.write(data)
        if self.closed:
            return
        if self._pending_full and self._pending_bytes <= self.low_water:
            self._pending_full = False
            self._sync_reading()
        if pending:
            self._pending_timer = self.loop.call_at(pending[0][0], self._release_pending)
        elif self._eof_after_pending:
            self._eof_after_pending = False
            self.finish()

    def on_eof(self) -> None:
        if self.stalled:
            return  # a stalled server never answers, not even with a FIN
        if any(isinstance(f, _Cut) and f.cutting for f in self._faults):
            return  # a close or reset is on its way; a FIN from finish() must not pre-empt it
        if self._pending:
            self._eof_after_pending = True  # echo what is still delayed, then close
            return
        self.finish()

    def pause_writing(self) -> None:
        self._out_full = True
        self._sync_reading()

    def resume_writing(self) -> None:
        self._out_full = False
        self._sync_reading()

    # Connection's send hooks: plaintext, above any layer, so the faults act alike in
    # plaintext and over TLS (each allowance becomes one TLS record).
    def send_allowance(self) -> int | None:
        # 0 while a cut is under way (its hold stops further writes): the bytes stay
        # buffered until the connection closes.
        limit: int | None = self.max_send
        for active in self._faults:
            cap = active.send_limit()
            if cap is not None and (limit is None or cap < limit):
                limit = cap
        return limit

    def after_send(self, sent: int) -> None:
        for active in list(self._faults):
            active.sent(sent)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._pending_timer is not None:
            self._pending_timer.cancel()
            self._pending_timer = None
        self._pending.clear()
        self._pending_bytes = 0
        for active in self._faults:
            active.detach()
        super().connection_lost(exc)


class FaultyEchoServer(EchoServer):
    """An :class:`EchoServer` that misbehaves on purpose, for testing clients.

    ``faults`` is a list of :class:`ServerFault` objects (``DelayEcho``, ``ChunkedEcho``,
    ``Stall``, ``CloseAfter``, ``ResetAfter``, ``AcceptThenClose``, ``StopAccepting``), applied
    to every connection in list order; ``seed`` (default: the run seed) seeds their random
    choices; ``fault_event_limit`` is how many :class:`FaultEvent` records
    :meth:`fault_events` keeps (oldest dropped first; 0 keeps none).  Every other option is
    :class:`EchoServer`'s.
    """

    kind = "faulty-echo"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Iterable[ServerFault] = (),
        seed: int | None = None,
        fault_event_limit: int = FAULT_EVENT_LIMIT,
        **kwargs: Any,
    ) -> None:
        check_count(fault_event_limit, "fault_event_limit", minimum=0)
        super().__init__(host, port, **kwargs)
        self._faults = _check_faults(faults)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an integer or None (the run seed), got {seed!r}")
        self.seed = get_run_seed() if seed is None else seed
        self._fault_events: deque[FaultEvent] = deque(maxlen=fault_event_limit)
        self._accepting = all(f.accepting for f in self._faults)
        self._listen_backlog = self.backlog
        self._numbers = 0

    def __repr__(self) -> str:
        faults = ", ".join(map(repr, self._faults)) or "none"
        return f"{super().__repr__()[:-1]} seed={self.seed} faults=[{faults}]>"

    @property
    def faults(self) -> tuple[ServerFault, ...]:  # type: ignore[override]
        return self._faults

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Start as :meth:`EchoServer.start` does, then apply the listener faults."""
        super().start(timeout)
        self.loop.run_sync(self._apply_listener_faults, timeout)
        return self

    def set_faults(self, faults: Iterable[ServerFault], *, existing: bool = True) -> None:
        """Replace the faults, from any thread; the listener follows at once.

        New connections get the new faults; with ``existing=True`` live connections switch
        too, as if just accepted (fresh counters; echoes already delayed keep their order).
        """
        checked = _check_faults(faults)

        def swap() -> None:
            self._faults = checked
            self._accepting = all(f.accepting for f in checked)
            self._apply_listener_faults()
            if existing:
                for conn in list(self._conns.values()):
                    if isinstance(conn, FaultyEchoConnection) and not conn.closed:
                        conn._install(checked, live=True)

        if self._started and not self._stopped:
            self.loop.run_sync(swap)
        else:
            swap()

    def fault_events(self, action: str | None = None, conn: int | None = None) -> list[FaultEvent]:
        """What the faults did so far (oldest first), optionally only one action/connection."""

        def copy() -> list[FaultEvent]:
            return list(self._fault_events)

        events = self.loop.run_sync(copy) if self._started and not self._stopped else copy()
        return [e for e in events
                if (action is None or e.action == action) and (conn is None or e.conn == conn)]

    # -- loop thread ---------------------------------------------------------------------------
    def make_connection(self, sock: socket.socket, addr: Any) -> Connection:
        self._numbers += 1
        conn = FaultyEchoConnection(self, sock, addr, self._numbers)
        conn._install(self._faults, live=False)
        return conn

    def _may_accept(self) -> bool:
        return self._accepting and super()._may_accept()

    def _apply_listener_faults(self) -> None:
        listener = self._listener
        if listener is None or listener.sock.fileno() == -1:
            return
        backlogs = [b for b in (f.listen_backlog() for f in self._faults) if b is not None]
        want = min(backlogs) if backlogs else self.backlog
        if want != self._listen_backlog:
            # listen() again on a listening socket just changes its backlog (Linux, BSD).
            listener.sock.listen(want)
            self._listen_backlog = want
        if self._accepting:
            listener.resume()
        else:
            listener.pause()
