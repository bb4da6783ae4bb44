"""A fault-injecting UDP proxy: :class:`UDPFaultProxy` (toxiproxy has no UDP at all).

UDP has no connections, so the proxy makes *sessions*: the first datagram from a client
address opens one, with its own socket connected to the target, so the target's replies
arrive on that socket and are routed back to that client.  Directions use toxiproxy's words:
**upstream** is client to target, **downstream** is target to client.

* Sessions that see no datagram for ``idle_timeout`` seconds expire; the table holds at most
  ``max_sessions``, and a new client beyond that evicts the least recently active session
  (both counted in :meth:`UDPFaultProxy.stats`), so a flood of source ports cannot exhaust
  descriptors.
* Faults (:mod:`pytest_multiconn.udp.faults`) are added, updated and removed while the proxy
  runs; each one on each direction of each session is a stage with its own
  ``random.Random``: ``fault_rng(seed, "udp", session number, direction, entry name)``, the
  same derivation :class:`~pytest_multiconn.proxy.FaultProxy` uses, so one seed replays one
  schedule (and a test can predict it).
* Every session keeps counts and a transcript (:class:`~pytest_multiconn.lowlevel.Transcript`,
  the one bounded type) of what each fault did to which datagram (:class:`FaultAction`);
  :meth:`UDPFaultProxy.report` is what a failing test's ``multiconn`` report section shows.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pytest_multiconn.core.blocking import to_thread
from pytest_multiconn.core.checks import check_count, check_seconds, check_seed
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Timer
from pytest_multiconn.core.seed import get_run_seed
from pytest_multiconn.core.transcript import Transcript
from pytest_multiconn.faults.base import fault_rng
from pytest_multiconn.faults.table import FaultEntry, FaultInfo, FaultTable
from pytest_multiconn.udp.base import UDPServerBase
from pytest_multiconn.udp.endpoint import (
    DatagramEndpoint,
    UDPTarget,
    address_of,
    bind_datagram,
    connect_datagram,
)
from pytest_multiconn.udp.faults.base import Datagram, DatagramFault, DatagramStage, FaultAction

Direction = Literal["upstream", "downstream", "both"]
DIRECTIONS: tuple[str, str] = ("upstream", "downstream")
_SHORT = {"upstream": "up", "downstream": "down"}

#: What the UDP proxy's fault table takes, said in its errors.
_DATAGRAM_FAULTS = "datagram faults such as Drop(probability=0.5) (pytest_multiconn.udp)"

#: Fault actions a session's transcript keeps by default (the first and the most recent).
DEFAULT_LIMIT = 256

#: Closed sessions kept for reports.
RECENT_SESSIONS = 16
_REPORT_TIMEOUT = 2.0


@dataclass(frozen=True)
class UDPProxyStats:
    """Counters of one UDP proxy, read at one instant (datagrams unless said otherwise)."""

    sessions: int  # open now
    sessions_total: int
    expired: int
    evicted: int
    upstream_in: int
    upstream_out: int
    downstream_in: int
    downstream_out: int
    #: Held by faults now (delayed, waiting in a reorder window).
    pending: int
    #: Dropped because a send queue was full (faults' drops are in the transcripts).
    queue_dropped: int
    #: Datagrams the kernel refused (an ICMP "port unreachable" from a stopped target...).
    errors: int


@dataclass(frozen=True)
class UDPSessionInfo:
    """A snapshot of one session: who, counts, and what the faults did."""

    number: int
    client: tuple[str, int]
    closed: bool
    end_reason: str
    upstream_in: int
    upstream_out: int
    downstream_in: int
    downstream_out: int
    actions: tuple[FaultAction, ...]
    transcript: str

    def __str__(self) -> str:
        end = f" closed: {self.end_reason}" if self.closed else ""
        return (f"session {self.number} client={self.client!r} up {self.upstream_in}->"
                f"{self.upstream_out} down {self.downstream_in}->{self.downstream_out}{end}")


class _Pipe:
    """One direction of one session: a chain of stages ending in a send (DatagramPipeAPI)."""

    def __init__(self, session: _Session, direction: str) -> None:
        self.owner = session
        self.loop = session.proxy.loop
        self.direction = direction
        self.session = session.number
        self.stages: list[DatagramStage] = []
        self.count = 0
        self.first: Any = self

    def relink(self) -> None:
        sink: Any = _Sink(self)
        for stage in reversed(self.stages):
            stage.next = sink
            sink = stage
        self.first = sink

    def feed_bytes(self, data: bytes) -> None:
        index = self.count
        self.count += 1
        self.owner.counts[self.direction, "in"] += 1
        self.first.feed(Datagram(index, data))

    def note(self, stage: DatagramStage, datagram: Datagram, action: str) -> None:
        self.owner.note(FaultAction(time.monotonic(), self.direction, stage.entry_name,
                                    datagram.index, len(datagram.data), action))
        self.owner.proxy.notify()

    def pending(self) -> int:
        return sum(stage.pending() for stage in self.stages)


class _Sink:
    """The end of a pipe: the datagram leaves the proxy."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    def feed(self, datagram: Datagram) -> None:
        self.pipe.owner.deliver(self.pipe.direction, datagram.data)


class _Session:
    """One client address's session.  It reads the proxy's settings and calls ``notify()``;
    what it does to the proxy otherwise goes through the two calls it is given: ``reply``
    (a datagram to its client, through the listening socket) and ``end`` (close this
    session: idle, evicted)."""

    def __init__(self, proxy: UDPFaultProxy, number: int, client: tuple[str, int], *,
                 reply: Callable[[bytes, tuple[str, int]], None],
                 end: Callable[[_Session, str], None]) -> None:
        self.proxy = proxy
        self.reply = reply
        self.end = end
        self.number = number
        self.client = client
        #: What the faults did, an entry per action (the one bounded transcript type: no
        #: merging, the first entry and the most recent ones kept).
        self.transcript = Transcript(proxy.transcript_limit, merged=frozenset(), width=4)
        #: Datagrams read and written per direction: ``counts["upstream", "in"]``.
        self.counts: Counter[tuple[str, str]] = Counter()
        #: Fault actions by ``(fault name, first word of the action)``, never dropped.
        self.totals: Counter[tuple[str, str]] = Counter()
        self.closed = False
        self.end_reason = ""
        self.last_active = time.monotonic()
        self.timer: Timer | None = None
        sock = connect_datagram(proxy.target)
        self.endpoint = DatagramEndpoint(proxy.loop, sock, self.from_target,
                                         max_queue=proxy.max_queue, label=f"session {number}")
        self.endpoint.on_drain = proxy.notify
        self.pipes = {d: _Pipe(self, d) for d in DIRECTIONS}
        for pipe in self.pipes.values():
            pipe.relink()

    def __repr__(self) -> str:
        return f"<UDP session {self.number} client={self.client!r}>"

    def start(self) -> None:
        self.endpoint.attach()
        self._arm()

    def _arm(self) -> None:
        idle = self.proxy.idle_timeout
        if idle is not None:
            self.timer = self.proxy.loop.call_at(self.last_active + idle, self._check_idle)

    def _check_idle(self) -> None:
        self.timer = None
        idle = self.proxy.idle_timeout
        if self.closed or idle is None:
            return
        now = time.monotonic()
        due = self.last_active + idle
        if now >= due and not self.pending():
            self.end(self, "idle timeout")
        else:
            # Active since the timer was set, or a fault still holds datagrams: not idle.
            self.timer = self.proxy.loop.call_at(max(due, now + idle), self._check_idle)

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def from_client(self, data: bytes) -> None:
        self.touch()
        self.pipes["upstream"].feed_bytes(data)
        self.proxy.notify()

    def from_target(self, data: bytes, addr: Any) -> None:
        self.touch()
        self.pipes["downstream"].feed_bytes(data)
        self.proxy.notify()

    def deliver(self, direction: str, data: bytes) -> None:
        if self.closed:
            return
        self.counts[direction, "out"] += 1
        if direction == "upstream":
            self.endpoint.send(data)
        else:
            self.reply(data, self.client)
        self.proxy.notify()

    def add_stage(self, entry: FaultEntry[DatagramFault], direction: str) -> None:
        rng = fault_rng(self.proxy.seed, "udp", self.number, direction, entry.name)
        pipe = self.pipes[direction]
        stage = entry.fault.make_stage(pipe, rng, f"{entry.name}[{_SHORT[direction]}]")
        stage.entry_name = entry.name
        pipe.stages.append(stage)
        pipe.relink()

    def remove_stages(self, name: str) -> None:
        for pipe in self.pipes.values():
            gone = [s for s in pipe.stages if s.entry_name == name]
            if not gone:
                continue
            pipe.stages = [s for s in pipe.stages if s not in gone]
            pipe.relink()
            for stage in gone:
                stage.detach()  # held datagrams go on to what is after it now

    def stages_named(self, name: str) -> list[DatagramStage]:
        return [s for p in self.pipes.values() for s in p.stages
                if s.entry_name == name]

    def pending(self) -> int:
        return sum(p.pending() for p in self.pipes.values())

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_reason = reason
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for pipe in self.pipes.values():
            for stage in pipe.stages:
                stage.stop()
        self.endpoint.close()

    def note(self, action: FaultAction) -> None:
        self.totals[action.fault, action.action.split(":")[0].split(" ")[0]] += 1
        self.transcript.record(_SHORT[action.direction], 0, action.describe(), action.when,
                               detail=action)

    def actions(self) -> list[FaultAction]:
        """The fault actions the transcript kept, oldest first."""
        return [e.detail for e in self.transcript.entries() if isinstance(e.detail, FaultAction)]

    def format(self, indent: str = "  ") -> str:
        """The datagram counts, the fault totals, then the transcript."""
        c = self.counts
        lines = [
            f"{indent}datagrams: up in={c['upstream', 'in']} out={c['upstream', 'out']}, "
            f"down in={c['downstream', 'in']} out={c['downstream', 'out']}"
        ]
        if self.totals:
            lines.append(indent + "faults: " + ", ".join(
                f"{fault} {what} {n}" for (fault, what), n in sorted(self.totals.items())))
        if len(self.transcript):
            lines.append(self.transcript.format(indent))
        return "\n".join(lines)

    def info(self) -> UDPSessionInfo:
        c = self.counts
        return UDPSessionInfo(
            self.number, self.client, self.closed, self.end_reason,
            c["upstream", "in"], c["upstream", "out"], c["downstream", "in"],
            c["downstream", "out"], tuple(self.actions()), self.format("    "),
        )


def _check_target(target: UDPTarget, allow_remote: bool) -> tuple[str, int]:
    address: Any = getattr(target, "address", target)  # checked below, whatever it is
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError, KeyError):
        raise ValueError(
            f"target must be (host, port) or a started UDP server, got {target!r}"
        ) from None
    return address_of(host, port, allow_remote=allow_remote, role="proxy to")


class UDPFaultProxy(UDPServerBase[UDPProxyStats]):
    """A UDP proxy in front of ``target`` that injects datagram faults on demand.

    ``target`` is ``(host, port)`` on loopback (``allow_remote=True`` for others) or a started
    server (anything with ``.address``).  ``listen`` is ``(host, port)``; port 0 picks one.
    ``seed`` overrides the run seed for every random draw.  Add faults with :meth:`add`.
    Use as a context manager, or ``start()`` / ``stop()``; ``check()`` re-raises loop errors.
    """

    kind = "udp-proxy"
    _twin_subject = "proxy"

    def __init__(
        self,
        target: UDPTarget,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        seed: int | None = None,
        allow_remote: bool = False,
        idle_timeout: float | None = 30.0,
        max_sessions: int = 256,
        max_queue: int = 1024,
        transcript_limit: int = DEFAULT_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
    ) -> None:
        self.target = _check_target(target, allow_remote)
        try:
            host, port = listen[0], listen[1]
        except (TypeError, IndexError, KeyError):
            raise ValueError(f"listen must be (host, port), got {listen!r}") from None
        super().__init__(host, port, allow_remote=allow_remote, max_queue=max_queue,
                         timeout=timeout, name=name)
        given = check_seed(seed, "seed", optional=True)
        self.seed = get_run_seed() if given is None else given
        self.idle_timeout = (None if idle_timeout is None
                             else check_seconds(idle_timeout, "idle_timeout"))
        self.max_sessions = check_count(max_sessions, "max_sessions", minimum=1, maximum=65536)
        self.transcript_limit = check_count(transcript_limit, "transcript_limit")
        self._faults = FaultTable(f"UDP proxy {self.name}", DatagramFault, _DATAGRAM_FAULTS)
        self._sessions: OrderedDict[tuple[str, int], _Session] = OrderedDict()
        self._recent: deque[_Session] = deque(maxlen=RECENT_SESSIONS)
        self._numbers = itertools.count(1)
        self._sessions_total = 0
        self._expired = 0
        self._evicted = 0
        self._session_errors = 0
        # Counters of sessions already closed, so stats() stays a sum over open ones.
        self._closed_counts = [0, 0, 0, 0, 0, 0]  # up in/out, down in/out, dropped, errors

    def _repr_extra(self) -> str:
        return f" target={self.target!r} faults={self._faults!r} seed={self.seed}"

    # -- the listening socket -------------------------------------------------------------------
    def _open(self) -> DatagramEndpoint:
        sock = bind_datagram(self._host, self._port, allow_remote=self.allow_remote)
        endpoint = DatagramEndpoint(self.loop, sock, self._from_client,
                                    max_queue=self.max_queue, label="listener")
        endpoint.on_drain = self.notify
        self.loop.add_closer(self._close_sessions)
        return endpoint

    def _from_client(self, data: bytes, addr: Any) -> None:
        client = (str(addr[0]), int(addr[1]))
        session = self._sessions.get(client)
        if session is None:
            try:
                session = self._new_session(client)
            except OSError:
                # No socket for a new session (EMFILE...): this datagram is lost, as it would
                # be on a congested network; the listener must keep serving the others.
                self._session_errors += 1
                return
        else:
            self._sessions.move_to_end(client)  # most recently active last: LRU eviction
        session.from_client(data)

    def _new_session(self, client: tuple[str, int]) -> _Session:
        while len(self._sessions) >= self.max_sessions:
            oldest = next(iter(self._sessions.values()))
            self._evicted += 1
            self._end_session(oldest, "evicted: session table full")
        session = _Session(self, next(self._numbers), client, reply=self._reply,
                           end=self._end_session)
        self._sessions[client] = session
        self._sessions_total += 1
        for entry in self._faults:
            for d in entry.directions():
                session.add_stage(entry, d)
        session.start()
        return session

    def _reply(self, data: bytes, client: tuple[str, int]) -> None:
        listener = self._endpoint
        if listener is not None:
            listener.send(data, client)

    def _end_session(self, session: _Session, reason: str) -> None:
        if self._sessions.get(session.client) is session:
            del self._sessions[session.client]
        if reason == "idle timeout":
            self._expired += 1
        session.close(reason)
        c = session.counts
        for i, value in enumerate((c["upstream", "in"], c["upstream", "out"],
                                   c["downstream", "in"], c["downstream", "out"],
                                   session.endpoint.dropped, session.endpoint.errors)):
            self._closed_counts[i] += value
        self._recent.append(session)
        self.notify()

    def _close_sessions(self) -> None:
        for session in list(self._sessions.values()):
            self._end_session(session, "proxy stopped")

    # -- faults (thread-safe): the one fault table, as FaultProxy and the servers keep it --
    def add(self, fault: DatagramFault, direction: Direction = "downstream",
            name: str | None = None) -> str:
        """Apply ``fault`` to ``direction`` of every session, live and future; return its name
        (default ``<fault name>_<direction>``: ``drop_upstream``).  A datagram fault draws
        its own ``probability`` per datagram, so there is no per-session draw here."""
        fault, _ = self._faults.check_add(fault, direction, 1.0, name)

        def go() -> str:
            entry = self._faults.add(fault, direction, 1.0, name)
            for session in list(self._sessions.values()):
                for d in entry.directions():
                    session.add_stage(entry, d)
            return entry.name

        return self._in_loop(go)

    def update(self, name: str, **params: Any) -> DatagramFault:
        """Change parameters of fault ``name`` (``probability=`` is the fault's own, per
        datagram); live sessions use them from the next datagram."""

        def go() -> DatagramFault:
            entry = self._faults.update(name, params, None)
            for session in list(self._sessions.values()):
                for stage in session.stages_named(name):
                    stage.fault = entry.fault
            return entry.fault

        return self._in_loop(go)

    def remove(self, name: str) -> None:
        """Remove fault ``name``; datagrams it was holding are passed on at once."""

        def go() -> None:
            self._faults.remove(name)
            for session in list(self._sessions.values()):
                session.remove_stages(name)

        self._in_loop(go)

    def clear(self) -> None:
        """Remove every fault."""
        for info in self.faults():
            self.remove(info.name)

    def faults(self) -> list[FaultInfo[DatagramFault]]:
        """The faults configured now, in the order they apply."""
        return self._in_loop(self._faults.info)

    # -- sessions ---------------------------------------------------------------------------
    def sessions(self) -> list[UDPSessionInfo]:
        """Snapshots of recently closed and live sessions, oldest first."""
        return self._in_loop(
            lambda: [s.info() for s in [*self._recent, *self._sessions.values()]])

    def session(self, client: tuple[str, int]) -> UDPSessionInfo:
        """The newest session of client address ``client``."""
        client = (str(client[0]), int(client[1]))
        for info in reversed(self.sessions()):
            if info.client == client:
                return info
        raise KeyError(f"no session for client {client!r} on {self!r}")

    def _stats(self) -> UDPProxyStats:
        up_in, up_out, down_in, down_out, dropped, errors = self._closed_counts
        pending = 0
        for s in self._sessions.values():
            c = s.counts
            up_in += c["upstream", "in"]
            up_out += c["upstream", "out"]
            down_in += c["downstream", "in"]
            down_out += c["downstream", "out"]
            dropped += s.endpoint.dropped
            errors += s.endpoint.errors
            pending += s.pending()
        listener = self._endpoint
        if listener is not None:
            dropped += listener.dropped
            errors += listener.errors + self._session_errors
        return UDPProxyStats(len(self._sessions), self._sessions_total, self._expired,
                             self._evicted, up_in, up_out, down_in, down_out, pending,
                             dropped, errors)

    def wait_for_sessions(self, n: int, timeout: float | None = None) -> UDPProxyStats:
        """Wait until ``n`` sessions have been opened in all."""
        self._refuse_blocking("wait_for_sessions")
        return self._wait_on(self.stats, lambda s: s.sessions_total >= n, timeout,
                             f"{n} sessions")

    def wait_for_upstream(self, n: int, timeout: float | None = None) -> UDPProxyStats:
        """Wait until ``n`` datagrams have come from clients in all."""
        self._refuse_blocking("wait_for_upstream")
        return self._wait_on(self.stats, lambda s: s.upstream_in >= n, timeout,
                             f"{n} datagrams upstream")

    def wait_echo_settled(self, sent: Mapping[tuple[str, int], int],
                          timeout: float | None = None) -> dict[tuple[str, int], int]:
        """For an **echo** target: wait until every client in ``sent`` (address -> datagrams
        it sent) has had them all read, no fault holds a datagram, and every datagram sent
        upstream has come back; return how many datagrams each client was sent downstream.

        :class:`~pytest_multiconn.udp.MultiDatagramClient` calls it (``expect=``) to know
        how many echoes to wait for when faults drop or duplicate some.
        """
        self._refuse_blocking("wait_echo_settled")
        wanted = {(str(a[0]), int(a[1])): n for a, n in sent.items()}

        def take() -> tuple[bool, dict[tuple[str, int], int]]:
            done = {}
            settled = True
            for client, n in wanted.items():
                s = self._sessions.get(client)
                if s is None:
                    settled = False
                    continue
                c = s.counts
                done[client] = c["downstream", "out"]
                if (c["upstream", "in"] < n or s.pending()
                        or c["upstream", "out"] != c["downstream", "in"]
                        or s.endpoint.queued):
                    settled = False
            listener = self._endpoint
            if listener is not None and listener.queued:
                settled = False
            return settled, done

        def snapshot() -> tuple[bool, dict[tuple[str, int], int]]:
            value: tuple[bool, dict[tuple[str, int], int]] = self._in_loop(take)
            return value

        return self._wait_on(snapshot, lambda v: v[0], timeout,
                             "every datagram to be echoed through the proxy")[1]

    # -- awaitable twins (see core/blocking.py) ------------------------------------------------
    async def await_for_sessions(self, n: int, timeout: float | None = None) -> UDPProxyStats:
        """Awaitable twin of :meth:`wait_for_sessions`."""
        return await to_thread(self.wait_for_sessions, n, timeout)

    async def await_for_upstream(self, n: int, timeout: float | None = None) -> UDPProxyStats:
        """Awaitable twin of :meth:`wait_for_upstream`."""
        return await to_thread(self.wait_for_upstream, n, timeout)

    async def await_echo_settled(self, sent: Mapping[tuple[str, int], int],
                                 timeout: float | None = None) -> dict[tuple[str, int], int]:
        """Awaitable twin of :meth:`wait_echo_settled`."""
        return await to_thread(self.wait_echo_settled, sent, timeout)

    def open_sockets(self) -> list[str]:
        found = super().open_sockets()
        found.extend(repr(s.endpoint) for s in list(self._sessions.values())
                     if s.endpoint.sock.fileno() != -1)
        return found

    # -- reports ----------------------------------------------------------------------------
    def report(self, limit: int = 16) -> str:
        """Faults, seed and every live and recently closed session's transcript."""

        def build() -> str:
            sessions = [*self._recent, *self._sessions.values()][-limit:]
            lines = [repr(self)]
            lines.extend(self._faults.report_lines("  "))
            lines.append(f"  seed={self.seed} counters: {self._stats()}")
            for session in sessions:
                lines.append(f"  {session.info()}")
                lines.append(session.format("      "))
            return "\n".join(lines)

        try:
            # Bounded tightly: a stuck loop is often why the test failed, and the report
            # must not hang on it as well.
            return str(self._in_loop(build, min(self.timeout, _REPORT_TIMEOUT)))
        except Exception as exc:  # noqa: BLE001 - a report must not raise in a failing test
            return f"{self!r}: no report ({type(exc).__name__}: {exc})"


__all__ = ["UDPFaultProxy", "UDPProxyStats", "UDPSessionInfo"]

