"""Servers on a background selector loop: the listener, counters, waits (:class:`ServerBase`).

The servers themselves (:class:`~pytest_multiconn.servers.echo.EchoServer` and the faulty one)
live above, in ``servers/`` and ``faults/``.  A server may be given a
:class:`~pytest_multiconn.core.layer.LayerFactory` (``layer=``; TLS is one) that puts a layer
under every connection it accepts; this module knows nothing else about it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from pytest_multiconn.core.address import (
    ServerAddress,
    SocketAddress,
    bind_listener,
    check_host,
    parse_port,
)
from pytest_multiconn.core.blocking import refuse_in_event_loop, to_thread
from pytest_multiconn.core.checks import (
    MAX_C_INT,
    check_count,
    check_instance,
    check_path,
    check_seconds,
)
from pytest_multiconn.core.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_TRANSCRIPT_LIMIT,
    Connection,
    validate_water_marks,
)
from pytest_multiconn.core.layer import LayerFactory
from pytest_multiconn.core.lifecycle import LoopService
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, EVENT_READ, Loop, LoopErrorRecord, Timer
from pytest_multiconn.core.registry import track_server, untrack_server
from pytest_multiconn.core.shared import SharedLoop, raise_recorded
from pytest_multiconn.errors import LoopStuckError, LoopThreadError, WaitTimeout

S = TypeVar("S", bound="ServerBase")

#: How many connections one readiness event may accept before the loop serves the others.
ACCEPT_BATCH = 256

#: Observer signature: ``(event, connection, data)``; event is "accept", "data" or "close".
Observer = Callable[[str, Connection, "bytes | None"], None]

# Accept errors that mean "the process or system is out of something", not "that peer failed".
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Accept errors that concern only the one connection being accepted.
_ACCEPT_PEER_ERRNOS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
    }
)
ACCEPT_BACKOFF_START = 0.01
ACCEPT_BACKOFF_MAX = 0.5


@dataclass(frozen=True)
class ServerStats:
    """Counters of one server, read at one instant."""

    accepted: int
    open: int
    closed: int
    bytes_in: int
    bytes_out: int
    peak_buffered: int
    buffered: int
    peer_errors: int
    idle_closed: int
    accept_errors: int
    accept_paused: bool
    #: TLS servers only (filled from the layer factory's ``stats()``): handshakes completed,
    #: TLS failures (handshake errors and timeouts, plaintext sent to the TLS port, bad
    #: records), and peers that closed TCP without ``close_notify``.
    tls_handshakes: int = 0
    tls_failures: int = 0
    tls_ragged_eofs: int = 0


@dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one live (or just closed) connection."""

    id: int
    label: str
    peer: SocketAddress | None
    bytes_in: int
    bytes_out: int
    buffered: int
    reading_paused: bool
    eof_received: bool
    closed: bool
    close_reason: str
    transcript: str

    def __str__(self) -> str:
        return (
            f"{self.label} peer={self.peer!r} in={self.bytes_in} out={self.bytes_out} "
            f"buffered={self.buffered}{' read-paused' if self.reading_paused else ''}"
            f"{' eof-received' if self.eof_received else ''}"
            f"{(' closed: ' + self.close_reason) if self.closed else ''}"
        )


def _nothing() -> None:
    """A wait's ``check`` when there is no loop-thread error to re-raise."""


def connection_info(conn: Connection) -> ConnectionInfo:
    return ConnectionInfo(
        id=conn.id,
        label=conn.label,
        peer=conn.peer,
        bytes_in=conn.bytes_in,
        bytes_out=conn.bytes_out,
        buffered=conn.buffered,
        reading_paused=conn.reading_paused,
        eof_received=conn.eof_received,
        closed=conn.closed,
        close_reason=conn.close_reason,
        transcript=conn.transcript.format(),
    )


class Listener:
    """The listening socket's selector data: accepts in batches, backs off on EMFILE.

    Public for servers that stop and start listening themselves (``FaultProxy.down()`` and
    ``up()``): ``Listener(server, sock).resume()`` listens, ``close()`` stops for good.
    """

    def __init__(self, server: ServerBase, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.registered = False
        self.backoff = ACCEPT_BACKOFF_START
        self.retry_timer: Timer | None = None
        #: accept() failures: a peer gone before we took it, or out of descriptors/memory.
        self.errors = 0
        self.last_error: OSError | None = None

    def __repr__(self) -> str:
        server = getattr(self, "server", None)
        name = server.name if server is not None else f"{self._name} (closed)"
        return f"<Listener {name} fd={self.sock.fileno()} registered={self.registered}>"

    def resume(self) -> None:
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        if not self.registered and self.sock.fileno() != -1:
            self.server.loop.register(self.sock, EVENT_READ, self)
            self.registered = True

    def pause(self) -> None:
        if self.registered:
            self.server.loop.unregister(self.sock)
            self.registered = False

    def handle_event(self, mask: int) -> None:
        server = self.server
        for _ in range(ACCEPT_BATCH):
            if not server.may_accept():
                self.pause()
                return
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                self.backoff = ACCEPT_BACKOFF_START
                return
            except OSError as exc:
                # Out of descriptors (EMFILE/ENFILE) or kernel memory: the pending connection
                # stays in the backlog and the listener stays readable, so retrying at once
                # would spin at 100% CPU.  Linux offers no way to reject just that connection
                # without a spare descriptor, so we stop listening, and retry after a short,
                # growing delay, or sooner when one of our own connections closes and gives a
                # descriptor back.  Other platforms report a peer that reset before we accepted
                # it as ECONNABORTED (and Linux a few network errors): those concern only that
                # connection, so we count them and keep accepting.
                if exc.errno in _ACCEPT_RESOURCE_ERRNOS:
                    self._back_off(exc)
                    return
                if exc.errno in _ACCEPT_PEER_ERRNOS:
                    self.errors += 1
                    continue
                raise
            try:
                server.accept_connection(sock, addr)
            except OSError as exc:
                # The same shortage one step later: accept() got a descriptor but making the
                # connection needed more (a proxy's socket to its target).  _accepted closed
                # the accepted socket; back off as above rather than let the loop close us.
                if exc.errno not in _ACCEPT_RESOURCE_ERRNOS:
                    raise
                self._back_off(exc)
                return

    def _back_off(self, exc: OSError) -> None:
        server = self.server
        self.errors += 1
        self.last_error = exc
        self.pause()
        delay, self.backoff = self.backoff, min(self.backoff * 2, ACCEPT_BACKOFF_MAX)
        self.retry_timer = server.loop.call_later(delay, self.resume)
        server.notify()

    def close(self) -> None:
        """Stop listening for good (idempotent)."""
        server = getattr(self, "server", None)
        if server is None:  # closed already
            return
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        if self.registered:
            with contextlib.suppress(KeyError, ValueError, OSError):
                server.loop.forget(self.sock)  # closed right below
            self.registered = False
        self.sock.close()
        # Closed for good: let go of the server, so that the two are freed by reference
        # counting when the test drops the server, not left as a cycle to the garbage
        # collector (about 25 us a test of a function-scoped server, issue 25).
        self._name = server.name
        del self.server


class ServerBase(LoopService[ServerAddress]):
    """A listening socket on its own selector loop thread; subclasses make the connections.

    ``timeout=`` bounds a ``wait_for*()`` called without one (default ``DEFAULT_TIMEOUT``; the
    pytest fixtures pass ``--multiconn-timeout`` to the servers they make), as it does on the
    proxies.
    """

    # (host, port) or a Unix socket's path once bound; None before (typed loosely, as it
    # always was, for the subclasses that index it).
    _address: Any

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unix_path: str | os.PathLike[str] | None = None,
        allow_remote: bool = False,
        backlog: int = 1024,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int | None = None,
        transcript_limit: int = DEFAULT_TRANSCRIPT_LIMIT,
        name: str | None = None,
        on_event: Observer | None = None,
        layer: LayerFactory | None = None,
        loop: SharedLoop | None = None,
        timeout: float | None = None,
    ) -> None:
        if loop is not None:
            check_instance(loop, "loop", SharedLoop, "a SharedLoop or None")
        if max_connections is not None:
            check_count(max_connections, "max_connections", minimum=1)
        if idle_timeout is not None:  # None: no idle limit
            idle_timeout = check_seconds(idle_timeout, "idle_timeout")
        check_count(transcript_limit, "transcript_limit", minimum=0)
        check_count(backlog, "backlog", minimum=0, maximum=MAX_C_INT)  # listen() takes an int
        if unix_path is not None:
            check_path(unix_path, "unix_path")
        if unix_path is None:
            # Refused here, like the client and the proxy do, not only when start() binds.
            host = check_host(host, allow_remote=allow_remote)
            port = parse_port(port)
        self.high_water, self.low_water = validate_water_marks(high_water, low_water)
        self._host = host
        self._port = port
        self._unix_path = unix_path
        self.allow_remote = allow_remote
        self.backlog = backlog
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.transcript_limit = transcript_limit
        super().__init__(name)
        if timeout is not None:  # None: the class's bound (DEFAULT_TIMEOUT) on every wait
            self.timeout = check_seconds(timeout, "timeout")
        self.on_event = on_event
        #: Puts a layer (TLS) under each accepted connection; None: plaintext.
        self.layer_factory = layer
        #: The shared loop thread this server runs on (``loop=``), or None: a thread of its own.
        self.shared_loop = loop
        # On a shared loop: the errors of this server's own handlers (the loop's ``errors``
        # are then those of no server in particular).
        self._errors: list[LoopErrorRecord] = []
        self._listener: Listener | None = None
        self._conns: dict[int, Connection] = {}
        # The connections themselves, formatted only when asked for: closing must stay cheap.
        self._recent_closed: deque[Connection] = deque(maxlen=16)
        self._accepted_count = 0
        self._closed_count = 0
        self._closed_bytes_in = 0
        self._closed_bytes_out = 0
        self._closed_peak = 0
        self._peer_errors = 0
        self._idle_closed = 0
        # True once _close_everything() ran (the listener is closed): every stop() on a
        # shared loop returns only then, not only the one that asked first (the one wait,
        # on this service's condition; not an Event of its own, one lock less per server).
        self._closed_down = False
        self._stop_lock = threading.Lock()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        addr = self.address
        return addr if isinstance(addr, str) else str(addr[0])

    @property
    def port(self) -> int:
        addr = self.address
        if isinstance(addr, str):
            raise AttributeError("a Unix socket server has no port; use .address")
        return int(addr[1])

    @property
    def family(self) -> socket.AddressFamily:
        if self._unix_path is not None:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self._host else socket.AF_INET

    def __repr__(self) -> str:
        if self._address is None:
            where = "not started"
        else:
            where = f"on {self._format_address()}"
            if self._stopped:
                where += " (stopped)"
        return (
            f"<{type(self).__name__} {self.name!r} {where} accepted={self._accepted_count} "
            f"open={len(self._conns)} errors={self._error_count()}>"
        )

    def _format_address(self) -> str:
        addr = self._address
        if isinstance(addr, str):
            return f"unix:{addr}"
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"

    # -- life cycle --------------------------------------------------------------------------
    def start(self: S, timeout: float = DEFAULT_TIMEOUT) -> S:
        """Bind, then start the loop thread; returns once the server accepts connections."""
        self._refuse_restart()
        sock = bind_listener(
            self._host,
            self._port,
            unix_path=self._unix_path,
            backlog=self.backlog,
            allow_remote=self.allow_remote,
        )
        self._started = True
        name = sock.getsockname()
        # IPv6 adds flow info and scope id; (host, port) is what create_connection() takes.
        self._address = name if isinstance(name, str) else tuple(name[:2])
        name = self._thread_name()
        if self.shared_loop is not None:
            return self._start_shared(self.shared_loop, sock, name, timeout)
        self._loop = loop = Loop(name)
        loop.on_error = lambda record: self.notify()
        self._listener = Listener(self, sock)
        self._listener.resume()
        loop.add_closer(self._close_everything)
        self._start_loop(loop, timeout)
        return self

    def _start_shared(
        self: S, shared: SharedLoop, sock: socket.socket, name: str, timeout: float
    ) -> S:
        # The listening socket already takes connections (into its backlog); the loop
        # thread registers it with the next callback it runs, so start() need not wait for
        # a round trip, and anything asked of the loop later (stats, stop) comes after it.
        self._run_name = name
        try:
            loop = shared.acquire(name, timeout, self)
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        self._listener = Listener(self, sock)
        track_server(self)
        # Registered from here if the loop thread waits in epoll (no wake-up of its CPU),
        # else by the loop thread with the next callback it runs.
        if not loop.run_while_idle(self._listener.resume):
            loop.call_soon_threadsafe(self._listener.resume)
        return self

    def record_loop_error(self, record: LoopErrorRecord) -> None:
        """Loop thread of a shared loop: an error raised by one of this server's handlers."""
        self._errors.append(record)
        self.notify()

    def _error_count(self) -> int:
        own = len(self._errors)
        if self.shared_loop is None and self._loop is not None:
            own += len(self._loop.errors)
        return own

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close every connection and the listener, join the loop thread (idempotent).

        From the loop thread itself (an ``on_event`` callback, a handler) the stop is
        scheduled: the thread closes everything and ends once that callback returns, and a
        later ``stop()`` from another thread joins it.  Called from several threads at once,
        each call returns once the listener is closed.
        """
        with self._stop_lock:
            if not self._started:
                self._stopped = True
                return
            first = not self._stopped
            self._stopped = True
        try:
            if self.shared_loop is not None:
                if first:  # the loop is not ours to stop: closing this server is all
                    self._stop_shared(self.shared_loop, timeout)
                else:
                    self._wait_closed_down(timeout)
                return
            # Every call reaches the loop: after a stop scheduled from the loop thread, a
            # later stop() from the test thread still joins the thread.
            self.loop.stop(timeout)
        finally:
            if first:
                untrack_server(self)
                if self._unix_path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(self._unix_path)
                self.notify()

    def _stop_shared(self, shared: SharedLoop, timeout: float) -> None:
        try:
            # A server whose close runs none of a user's code (no connection open, say) is
            # closed from here while the loop thread waits in epoll, without a round trip;
            # else the loop thread closes it.
            shared.release(
                self.loop, self._close_everything, timeout, self,
                direct=self.may_close_off_thread,
            )
        except LoopThreadError as exc:
            # Its thread died under it: check() fails this server's test, as it would with
            # a loop of its own (whose error check() re-raises).
            self._errors.append(LoopErrorRecord(exc, repr(self), time.monotonic()))

    def may_close_off_thread(self) -> bool:
        """Closing this server now, from a thread other than its loop's, would run none of a
        user's code (handlers, observers): no accept retry is pending and no connection is
        open; subclasses narrow it.  Asked while the loop thread is held
        (``Loop.run_while_idle``), so the answer cannot change under it.

        Why not also close open connections from here: a test has usually closed its client
        by teardown, and that end of stream has already woken the loop thread, which then
        waits for the GIL.  Closing from here left it a stale event to take the GIL for
        during the next test's setup; letting it close the server in the same wake costs
        less (issue 25: 0.79 -> 0.72 ms per exchange test, quiet; the same with a burner).
        """
        listener = self._listener
        return (listener is None or listener.retry_timer is None) and not self._conns

    def _wait_closed_down(self, timeout: float) -> None:
        # Another stop() closes this server (or scheduled the close from the loop thread):
        # return when it is done, not before.  The loop thread itself cannot wait for it.
        thread = self.loop.thread
        if thread is not None and thread.ident == threading.get_ident():
            return
        try:
            self._wait_until(
                lambda: self._closed_down, bool, timeout, "the listener to close",
                check=_nothing, describe=lambda _: "",
            )
        except WaitTimeout:
            raise LoopStuckError(
                f"{self!r}: another stop() did not close the listener within {timeout}s; "
                "a handler is blocking the loop thread"
            ) from None

    def check(self) -> None:
        """Re-raise, in the caller, the first exception the loop thread recorded."""
        if self._errors:
            errors, self._errors = self._errors, []
            raise_recorded(self.name, errors)
        if self._loop is not None and self.shared_loop is None:
            self._loop.check()

    def _close_everything(self) -> None:
        # Closes what the selector may not hold right now: a listener paused by
        # max_connections or EMFILE, connections paused with nothing to write.
        try:
            if self._listener is not None:
                self._listener.close()
            for conn in list(self._conns.values()):
                conn.close(reason="server stopped")
        finally:
            self._closed_down = True
            self.notify()

    # -- subclass interface ---------------------------------------------------------------
    def make_connection(self, sock: socket.socket, addr: SocketAddress) -> Connection:
        raise NotImplementedError

    # -- loop-thread bookkeeping -------------------------------------------------------------
    def may_accept(self) -> bool:
        return self.max_connections is None or len(self._conns) < self.max_connections

    def accept_connection(self, sock: socket.socket, addr: SocketAddress) -> None:
        # accept() gives TCP peers as a tuple and Unix ones as a (usually empty) string:
        # testing that, not ``sock.family``, spares an IntEnum conversion per connection.
        if isinstance(addr, tuple):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            addr = addr or self._address
        try:
            conn = self.make_connection(sock, addr)
            if self.layer_factory is not None:
                conn.use_layer(self.layer_factory.new_layer(conn, self.notify))
        except BaseException:
            sock.close()
            raise
        self._accepted_count += 1
        self._conns[conn.id] = conn
        conn.attach()
        if self.idle_timeout is not None and not conn.closed:
            conn.set_idle_timeout(self.idle_timeout)
        if self.on_event is not None:
            self.on_event("accept", conn, None)
        self.notify()

    def connection_closed(self, conn: Connection) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        self._closed_count += 1
        self._closed_bytes_in += conn.bytes_in
        self._closed_bytes_out += conn.bytes_out
        self._closed_peak = max(self._closed_peak, conn.peak_buffered)
        if conn.error is not None:
            self._peer_errors += 1
        if conn.close_reason == "idle timeout":
            self._idle_closed += 1
        self._recent_closed.append(conn)
        if self.on_event is not None:
            self.on_event("close", conn, None)
        listener = self._listener
        if listener is not None and not listener.registered and not self.loop.stopping:
            listener.resume()  # a descriptor or a connection slot just came free
        self.notify()

    # -- observing from the test thread ---------------------------------------------------------
    def stats(self) -> ServerStats:
        """Counters, consistent at one instant (taken in the loop thread).

        The snapshot is taken after the loop has handled every socket event that was ready
        when ``stats()`` was called: a client that closed its connections before calling it
        (``MultiConnClient.run()`` returned) sees them counted as closed, not open.
        """
        if self._started and not self._stopped:
            return self.loop.run_sync(self._stats, after_io=True)
        return self._stats()

    def _stats(self) -> ServerStats:
        live = list(self._conns.values())
        listener = self._listener
        return ServerStats(
            accepted=self._accepted_count,
            open=len(live),
            closed=self._closed_count,
            bytes_in=self._closed_bytes_in + sum(c.bytes_in for c in live),
            bytes_out=self._closed_bytes_out + sum(c.bytes_out for c in live),
            peak_buffered=max([self._closed_peak, *(c.peak_buffered for c in live)]),
            buffered=sum(c.buffered for c in live),
            peer_errors=self._peer_errors,
            idle_closed=self._idle_closed,
            accept_errors=listener.errors if listener is not None else 0,
            accept_paused=listener is not None and not listener.registered,
            **(self.layer_factory.stats() if self.layer_factory is not None else {}),
        )

    def connections(self) -> list[ConnectionInfo]:
        """Snapshots of the live connections, oldest first."""

        def snap() -> list[ConnectionInfo]:
            return [connection_info(c) for c in list(self._conns.values())]

        return self.loop.run_sync(snap) if self._started and not self._stopped else snap()

    def open_sockets(self) -> list[str]:
        """Sockets still open (the plugin's leak check): the listener and each connection."""
        found: list[str] = []
        listener = self._listener
        if listener is not None and listener.sock.fileno() != -1:
            found.append(f"listening socket fd={listener.sock.fileno()}")
        found.extend(repr(c) for c in list(self._conns.values()) if c.sock.fileno() != -1)
        return found

    def snapshot(self, timeout: float | None = None) -> tuple[ServerStats, list[ConnectionInfo]]:
        """Counters and connection snapshots (the recently closed, then the live ones) taken
        at one instant, in the loop thread while it runs (bounded by ``timeout``, default the
        server's): what a failing test's report shows."""

        def take() -> tuple[ServerStats, list[ConnectionInfo]]:
            live = [connection_info(c) for c in list(self._conns.values())]
            return self._stats(), [*self.recently_closed(), *live]

        loop = self._loop
        if loop is not None and loop.is_running() and not self._stopped:
            taken: tuple[ServerStats, list[ConnectionInfo]] = loop.run_sync(
                take, self.timeout if timeout is None else timeout
            )
            return taken
        return take()

    def recently_closed(self) -> list[ConnectionInfo]:
        """Snapshots of the last 16 connections closed."""
        return [connection_info(c) for c in list(self._recent_closed)]

    def wait_for(
        self,
        predicate: Callable[[ServerStats], bool],
        timeout: float | None = None,
        what: str = "a condition",
    ) -> ServerStats:
        """Block until ``predicate(stats)`` holds; raise :class:`WaitTimeout` naming ``what``.

        ``timeout`` defaults to :attr:`timeout`."""
        self._refuse_blocking("wait_for")
        return self._wait_for(predicate, timeout, what)

    def _wait_for(
        self, predicate: Callable[[ServerStats], bool], timeout: float | None, what: str
    ) -> ServerStats:
        # The wait itself; every public wait refuses a running event loop once, by its own
        # name, before it gets here.
        timeout = self.timeout if timeout is None else timeout  # checked by the one wait
        # The stats come from the loop thread (stats()), whose snapshot never shows "echoed"
        # before the count of what was sent has caught up.  The loop records a handler's
        # error before it closes the connection, so errors read *after* the stats include
        # every error behind them: a failed connection that counts as closed raises in the
        # check, which is what the test needs to see.
        return self._wait_until(
            self.stats, predicate, timeout, what,
            check=self._check_if_errors, describe=self._describe_wait, stop_ends_wait=True,
        )

    def _finished(self) -> bool:
        # A stop() scheduled from the loop thread has not closed anything yet: until the close
        # ran, the counts still change.
        return self._stopped and (not self._started or self._closed_down)

    def _describe_wait(self, stats: ServerStats) -> str:
        live = "\n".join(f"  {c}" for c in self.connections()[:10]) or "  (none)"
        return f"stats: {stats}\nlive connections:\n{live}"

    def wait_for_connections(self, n: int, timeout: float | None = None) -> ServerStats:
        """Wait until at least ``n`` connections are open at once."""
        self._refuse_blocking("wait_for_connections")
        return self._wait_for(lambda s: s.open >= n, timeout, f"{n} open connections")

    def wait_for_accepted(self, n: int, timeout: float | None = None) -> ServerStats:
        """Wait until ``n`` connections have been accepted in all."""
        self._refuse_blocking("wait_for_accepted")
        return self._wait_for(lambda s: s.accepted >= n, timeout, f"{n} accepted connections")

    def wait_for_closed(self, n: int, timeout: float | None = None) -> ServerStats:
        """Wait until ``n`` connections have been closed in all."""
        self._refuse_blocking("wait_for_closed")
        return self._wait_for(lambda s: s.closed >= n, timeout, f"{n} closed connections")

    def wait_for_idle(self, timeout: float | None = None) -> ServerStats:
        """Wait until no connection is open."""
        self._refuse_blocking("wait_for_idle")
        return self._wait_for(lambda s: s.open == 0, timeout, "no open connections")

    def wait_for_bytes(self, n: int, timeout: float | None = None) -> ServerStats:
        """Wait until the server has received ``n`` bytes in all."""
        self._refuse_blocking("wait_for_bytes")
        return self._wait_for(lambda s: s.bytes_in >= n, timeout, f"{n} bytes received")

    # -- awaitable twins (see core/blocking.py) ------------------------------------------------
    def _refuse_blocking(self, call: str) -> None:
        refuse_in_event_loop(f"{type(self).__name__}.{call}()", f"await server.a{call}(...)")

    async def __aenter__(self: S) -> S:
        # start() and stop() wait only for our own loop thread (milliseconds, bounded), never
        # for a peer, so they run inline: ``async with`` needs no worker thread and no anyio.
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    async def await_for(
        self,
        predicate: Callable[[ServerStats], bool],
        timeout: float | None = None,
        what: str = "a condition",
    ) -> ServerStats:
        """Awaitable twin of :meth:`wait_for` (asyncio or trio; needs ``[async]``)."""
        return await to_thread(self.wait_for, predicate, timeout, what)

    async def await_for_connections(self, n: int, timeout: float | None = None) -> ServerStats:
        """Awaitable twin of :meth:`wait_for_connections`."""
        return await to_thread(self.wait_for_connections, n, timeout)

    async def await_for_accepted(self, n: int, timeout: float | None = None) -> ServerStats:
        """Awaitable twin of :meth:`wait_for_accepted`."""
        return await to_thread(self.wait_for_accepted, n, timeout)

    async def await_for_closed(self, n: int, timeout: float | None = None) -> ServerStats:
        """Awaitable twin of :meth:`wait_for_closed`."""
        return await to_thread(self.wait_for_closed, n, timeout)

    async def await_for_idle(self, timeout: float | None = None) -> ServerStats:
        """Awaitable twin of :meth:`wait_for_idle`."""
        return await to_thread(self.wait_for_idle, timeout)

    async def await_for_bytes(self, n: int, timeout: float | None = None) -> ServerStats:
        """Awaitable twin of :meth:`wait_for_bytes`."""
        return await to_thread(self.wait_for_bytes, n, timeout)

    @contextlib.contextmanager
    def running(self: S) -> Iterator[S]:
        """``with server.running():`` starts and stops, re-raising loop errors at the end."""
        with self:
            yield self
