"""A fault-injecting TCP proxy on the selector loop: :class:`FaultProxy`.

Each accepted client gets a new connection to the target, and the proxy relays bytes between
the two.  Directions use toxiproxy's words: **upstream** is client to server (what the
proxy reads from the client and writes to the target), **downstream** is server to client.

Without faults, a chunk read on one side is written straight into the other side's
:class:`~pytest_multiconn.Connection` (the same cost as an echo).  A direction gets a pipeline
(``faults/pipeline.py``) only when a fault or step mode applies to it: a chain of toxic
stages ending in a gate that writes to the socket, or holds the bytes until the test
releases them.

Relay rules:

* end-of-stream is forwarded after the data: a half-close on one side becomes a half-close
  (``shutdown(SHUT_WR)``) on the other, and a connection closes once both directions ended;
* an error on one side (RST, refused connect) becomes an RST on the other;
* backpressure: when one side's output buffer passes its high-water mark, or a direction's
  pipeline holds more than that, the proxy stops reading from the sending side, so a slow
  reader makes the kernel push back on the writer instead of the proxy buffering.

On Linux a bulk direction without faults is relayed inside the kernel with ``splice()``
(``proxy/splice.py``; the essay there says why, what it costs, and how a direction leaves
it).  The other modules of this package: ``side.py`` (one side's socket), ``pair.py`` (one
proxied connection), ``handle.py`` (what tests hold), ``transcript.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import TypeAlias, TypeVar, cast

from pytest_multiconn.core.address import (
    Address,
    ServerAddress,
    SocketAddress,
    bind_listener,
    check_host,
    family_for,
    parse_port,
)
from pytest_multiconn.core.blocking import to_thread
from pytest_multiconn.core.checks import check_bool, check_seconds, check_seed
from pytest_multiconn.core.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_TRANSCRIPT_LIMIT,
    Connection,
)
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT
from pytest_multiconn.core.seed import get_run_seed
from pytest_multiconn.core.server import ConnectionInfo, Listener, ServerBase
from pytest_multiconn.errors import AddressError
from pytest_multiconn.faults.pipeline import DIRECTIONS
from pytest_multiconn.faults.table import FaultHolder, StreamFaults, stream_table
from pytest_multiconn.proxy.handle import ProxiedConnection
from pytest_multiconn.proxy.pair import Pair, Relay
from pytest_multiconn.proxy.splice import splice_available

#: Closed connections that ``wait_for_connection()`` has not returned yet are kept, oldest
#: dropped first, up to twice this many (at least this many): a proxy that serves any number
#: of short connections keeps a bounded history, and a test can still claim recent ones.
CLOSED_HISTORY = 64

T = TypeVar("T")


def _looks_like_hostport(text: str, what: str) -> bool:
    """True for "10.0.0.1:80", "localhost:8080", "[::1]:80" (an address); False for a Unix
    socket path (any string with a "/" or without a ":").  A string with a ":" and no "/"
    that is no address ("localhost:http", "host:", ":80") is a ValueError: taking it for a
    socket path would only fail later, at connect.  A path with such a name can still be
    given as "./name" or as a pathlib.Path."""
    host, sep, port = text.rpartition(":")
    if not sep or "/" in text:
        return False
    if host and port.strip().isdigit():
        return True
    wrong = "its host is empty" if not host else f"its port {port!r} is not a number"
    raise ValueError(
        f"{what} {text!r} looks like \"host:port\" but {wrong}: give a port number "
        f"(\"localhost:8080\"); for a Unix socket of that name write {'./' + text!r} or pass "
        "a pathlib.Path"
    )


#: What a proxy may stand in front of: an address, or a started server (its ``.address``).
ProxyTarget: TypeAlias = Address | ServerBase


def _parse_address(value: object, *, what: str, allow_remote: bool, role: str,
                   allow_zero: bool) -> tuple[ServerAddress, socket.AddressFamily]:
    """``(host, port)``, ``"host:port"``, a Unix socket path or a started server, checked."""
    if isinstance(value, ServerBase):
        value = value.address
    if isinstance(value, os.PathLike) or (isinstance(value, str)
                                          and not _looks_like_hostport(value, what)):
        path = os.fspath(value)
        if not isinstance(path, str) or not path:
            raise ValueError(f"{what} must be a non-empty Unix socket path, got {value!r}")
        return path, socket.AF_UNIX
    if isinstance(value, str):
        text_host, text_port = value.rsplit(":", 1)
        if text_host.startswith("[") and text_host.endswith("]"):
            text_host = text_host[1:-1]
        value = (text_host, text_port)
    if not isinstance(value, (tuple, list)) or len(value) != 2:  # noqa: PLR2004 - (host, port)
        raise ValueError(
            f"{what} must be (host, port), \"host:port\", a Unix socket path or a started "
            f"server, got {value!r}"
        )
    raw_host, raw_port = value
    if not isinstance(raw_host, str):
        raise AddressError(f"{what} host must be a string, got {raw_host!r}")
    host = check_host(raw_host, allow_remote=allow_remote, role=role)
    port = parse_port(raw_port, what=f"{what} port")
    if port == 0 and not allow_zero:
        raise ValueError(f"{what} port 0 is not a server's port; give the port it listens on")
    return (host, port), family_for(host)


# -- the proxy -------------------------------------------------------------------------------------
class FaultProxy(StreamFaults, ServerBase):
    """A TCP proxy in front of ``target`` that injects faults on demand.

    ``target`` is ``(host, port)`` or ``"host:port"`` on loopback (``allow_remote=True`` for
    others), a Unix socket path (any other string, or a ``pathlib.Path``), or a started
    server.  ``listen`` is the same (port 0 = ephemeral).  ``timeout`` bounds every wait and
    every call into the loop thread.  Faults are added with :meth:`add`; ``hold=True`` starts
    every connection in step mode.  ``seed`` overrides the run seed for every random draw.
    Use as a context manager, or ``start()`` / ``stop()``; ``check()`` re-raises loop errors.
    """

    kind = "proxy"

    def __init__(
        self,
        target: ProxyTarget,
        listen: Address = ("127.0.0.1", 0),
        *,
        seed: int | None = None,
        hold: bool = False,
        allow_remote: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        backlog: int = 1024,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int | None = None,
        transcript_limit: int = DEFAULT_TRANSCRIPT_LIMIT,
        name: str | None = None,
    ) -> None:
        self.target, self.target_family = _parse_address(
            target, what="target", allow_remote=allow_remote, role="proxy to", allow_zero=False
        )
        self.timeout = check_seconds(timeout, "timeout")
        where, _family = _parse_address(
            listen, what="listen", allow_remote=allow_remote, role="bind", allow_zero=True
        )
        unix_path: str | None = None
        if isinstance(where, str):  # a Unix socket path (family AF_UNIX)
            host, port, unix_path = "127.0.0.1", 0, where
        else:
            host, port = where
        super().__init__(
            host, port, unix_path=unix_path, allow_remote=allow_remote, backlog=backlog,
            max_connections=max_connections, idle_timeout=idle_timeout, high_water=high_water,
            low_water=low_water, transcript_limit=transcript_limit, name=name,
        )
        given = check_seed(seed, "seed", optional=True)
        self.seed = get_run_seed() if given is None else given
        self._fault_table = stream_table(f"proxy {self.name}")
        #: What every pair shares with the proxy: the table, step mode for new connections,
        #: splice (bulk directions without faults, Linux; off for good after an EINVAL).
        self._relay = Relay(self._fault_table, hold_new=check_bool(hold, "hold"),
                            splice=splice_available(), client_closed=self.connection_closed,
                            pair_done=self._pair_done)
        self._down = False
        self._pairs: dict[int, Pair] = {}
        # Accepted and not yet returned by wait_for_connection(), in accept order; closed ones
        # only up to a bound (CLOSED_HISTORY), so short connections cost no memory for good.
        self._unclaimed: deque[Pair] = deque()
        self._unclaimed_closed = 0
        self._unclaimed_dropped = 0
        self._recent_pairs: deque[Pair] = deque(maxlen=16)
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        extras = f" target={self.target!r} faults={self._fault_table!r}"
        if self._down:
            extras += " DOWN"
        if self._relay.hold_new:
            extras += " held"
        return f"{base}{extras}>"

    # -- faults (thread-safe) ---------------------------------------------------------------------
    # add / update / remove / clear / faults: StreamFaults (faults/table.py), as a server's.
    def _fault_holders(self) -> list[FaultHolder]:
        return list(self._pairs.values())

    # -- down / up --------------------------------------------------------------------------
    def down(self, *, reset: bool = False) -> None:
        """Stop listening (new connections are refused) and cut every connection (with an RST
        if ``reset``), like disabling a toxiproxy proxy.  ``up()`` listens again."""

        def go() -> None:
            if self._down:
                return
            self._down = True
            listener = self._listener
            if listener is not None:
                listener.close()
                if self._unix_path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(self._unix_path)
            for pair in list(self._pairs.values()):
                if reset:
                    pair.reset("proxy down")
                else:
                    pair.cut("proxy down")

        self._in_loop(go)

    def up(self) -> None:
        """Listen again on the same address after ``down()``."""

        def go() -> None:
            if not self._down:
                return
            addr = self._address
            if isinstance(addr, str):
                sock = bind_listener(None, 0, unix_path=addr, backlog=self.backlog)
            else:
                sock = bind_listener(addr[0], addr[1], backlog=self.backlog,
                                     allow_remote=self.allow_remote)
            self._listener = Listener(self, sock)
            self._listener.resume()
            self._down = False

        self._in_loop(go)

    @property
    def is_down(self) -> bool:
        return self._down

    @property
    def connections_seen(self) -> int:
        """How many connections the proxy has accepted so far (live and closed; the same as
        ``stats().accepted``).  Taken in the loop thread after it handled every event the
        kernel had delivered, so clients whose ``connect()`` returned before are counted:
        ``assert proxy.connections_seen == 1`` checks that a client did not reconnect,
        without waiting for a connection that should not come."""
        return self.stats().accepted

    # -- step mode -------------------------------------------------------------------------------
    def hold(self) -> None:
        """Hold both directions of every connection, live and future, until released."""

        def go() -> None:
            self._relay.hold_new = True
            for pair in list(self._pairs.values()):
                for d in DIRECTIONS:
                    pair.pipe(d).hold()

        self._in_loop(go)

    def unhold(self) -> None:
        """Stop holding: deliver what is held and let every connection flow."""

        def go() -> None:
            self._relay.hold_new = False
            for pair in list(self._pairs.values()):
                for d in DIRECTIONS:
                    pipe = pair.pipes[d]
                    if pipe is not None:
                        pipe.unhold()
                        pair.maybe_fast_path(d)

        self._in_loop(go)

    def wait_for_connection(self, timeout: float | None = None) -> ProxiedConnection:
        """The next connection not yet returned by this method (in accept order), waiting for
        it to be accepted and connected to the target.

        Connections that closed before they were claimed are kept only up to a bound (at
        least the last :data:`CLOSED_HISTORY`); older ones are skipped, so a proxy serving
        any number of short connections keeps flat memory.
        """
        self._refuse_blocking("wait_for_connection")

        def claim() -> Pair | None:
            # In the loop thread, which is the one that trims the history: the oldest
            # unclaimed connection, once it is connected (or already closed).
            head = self._unclaimed[0] if self._unclaimed else None
            if head is None or not (head.connected or head.done):
                return None
            self._unclaimed.popleft()
            head.claimed = True
            if head.done:
                self._unclaimed_closed -= 1
            return head

        pair = self._wait(claim, lambda p: p is not None, timeout,
                          "a connection through the proxy")
        return self._handle(cast(Pair, pair))  # not None: the predicate said so

    def _handle(self, pair: Pair) -> ProxiedConnection:
        return ProxiedConnection(pair, self._in_loop, self._wait)

    def handles(self) -> list[ProxiedConnection]:
        """Handles on every live connection, oldest first."""
        return [self._handle(p) for p in self._in_loop(lambda: list(self._pairs.values()))]

    async def await_for_connection(self, timeout: float | None = None) -> ProxiedConnection:
        """Awaitable twin of :meth:`wait_for_connection` (asyncio or trio; needs ``[async]``)."""
        return await to_thread(self.wait_for_connection, timeout)

    def _wait(self, take: Callable[[], T], predicate: Callable[[T], bool],
              timeout: float | None, what: str,
              show: Callable[[T], object] | None = None) -> T:
        """Wait until ``predicate(take())`` holds, ``take`` running in the loop thread.

        The one wait (``LoopService._wait_until``): the loop thread notifies whenever a
        connection is accepted, connects, closes or has bytes held, and when it records an
        error, so there is nothing to poll.  A timeout names ``what``, ``show(value)`` and the
        proxy's report; a wait on a stopped proxy fails at once (``WaitImpossible``).
        """
        bound = self.timeout if timeout is None else check_seconds(timeout, "timeout")

        def describe(value: T) -> str:
            now = f"now: {show(value)}\n" if show is not None else ""
            return now + self.report(limit=4)

        return self._wait_until(lambda: self._in_loop(take), predicate, bound, what,
                                check=self.check, describe=describe, stop_ends_wait=True)

    # -- reports --------------------------------------------------------------------------------
    def report(self, limit: int = 16) -> str:
        """Every live and recently closed connection with its transcript (for failure reports)."""

        def build() -> str:
            pairs = [*self._recent_pairs, *self._pairs.values()][-limit:]
            lines = [repr(self)]
            lines.extend(self._fault_table.report_lines("  "))
            lines.append(f"  seed={self.seed}")
            for pair in pairs:
                lines.append(f"  {pair!r}")
                lines.append(pair.transcript.format("      "))
            return "\n".join(lines)

        if self._started and not self._stopped:
            try:
                return str(self.loop.run_sync(build, self.timeout))
            except Exception as exc:  # noqa: BLE001 - a report must not raise in a failing test
                return f"{self!r}: no report ({type(exc).__name__}: {exc})"
        return build()

    def connections(self) -> list[ConnectionInfo]:
        """Snapshots of the live connections (client side; the transcript covers both sides)."""
        return super().connections()

    # -- ServerBase hooks (loop thread) ------------------------------------------------------------
    def may_accept(self) -> bool:
        return not self._down and super().may_accept()

    def make_connection(self, sock: socket.socket, addr: SocketAddress) -> Connection:
        try:
            pair = Pair(self, next(self._numbers), sock, addr, self.target_family,
                        relay=self._relay)
        except OSError:
            # Out of descriptors (EMFILE/ENFILE) for the socket to the target: refuse this
            # client with an RST (what it would see from a server that cannot take it), and let
            # the listener back off and retry (core/server.py: Listener) instead of dying.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise
        self._pairs[pair.number] = pair
        self._unclaimed.append(pair)
        return pair.client

    def _pair_done(self, pair: Pair) -> None:
        self._pairs.pop(pair.number, None)
        self._recent_pairs.append(pair)
        if not pair.claimed:
            self._unclaimed_closed += 1
            if self._unclaimed_closed >= 2 * CLOSED_HISTORY:
                self._trim_unclaimed()
        self.notify()

    def _trim_unclaimed(self) -> None:
        """Forget the oldest CLOSED_HISTORY closed, unclaimed connections (amortised O(1))."""
        drop = self._unclaimed_closed - CLOSED_HISTORY
        kept: deque[Pair] = deque()
        for pair in self._unclaimed:
            if drop and pair.done:
                drop -= 1
                self._unclaimed_closed -= 1
                self._unclaimed_dropped += 1
            else:
                kept.append(pair)
        self._unclaimed = kept

    def connection_closed(self, conn: Connection) -> None:
        super().connection_closed(conn)
        listener = self._listener
        if self._down and listener is not None and listener.registered:
            listener.pause()

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close every proxied connection and the listener, join the loop thread."""
        if self._started and not self._stopped and self.loop.is_running():
            # The loop closes only handlers registered with its selector at stop; a side that
            # is neither reading nor writing (end-of-stream received, held, paused) is not, so
            # close every pair here first.
            def cut_all() -> None:
                for pair in list(self._pairs.values()):
                    pair.cut("proxy stopped")

            self.loop.run_sync(cut_all, timeout)
        super().stop(timeout)


__all__ = ["CLOSED_HISTORY", "FaultProxy"]
