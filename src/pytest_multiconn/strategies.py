"""Hypothesis strategies for schedules that shrink: chunkings, pauses and fault schedules.

A property test draws *how* bytes cross the wire (where a request is split, how long the
sender pauses, which toxics and client faults act) and Hypothesis, on a failure, shrinks the
schedule to the smallest one that still fails: "split the request after byte 3"::

    from hypothesis import given, settings
    from pytest_multiconn.strategies import chunkings, serving

    REQUEST = b"PING hello\\n"

    @settings(max_examples=50, deadline=None)
    @given(chunking=chunkings(len(REQUEST)))
    def test_server_reads_split_lines(chunking):
        with serving(MyServer) as served:         # per example: fresh server and proxy
            sock = served.connect()
            served.send(sock, REQUEST, chunking)  # the server's reads are exactly the chunks
            assert served.recv_line(sock) == b"OK PING hello\\n"

The values drawn (:class:`Chunking`, :class:`FaultSchedule`) are plain frozen objects whose
``repr`` is the schedule, so Hypothesis's "Falsifying example" line is the replay: a
:class:`FaultSchedule` carries the proxy ``seed`` every random choice of its toxics derives
from, and :func:`serving` adds a ``note`` (printed with the falsifying example) in words.

Why :func:`serving` and not the ``multiconn_server`` fixture: a function-scoped fixture is
set up once per *test*, not once per example, so Hypothesis refuses it
(``HealthCheck.function_scoped_fixture``): state from one example (open connections, a
server's counters, a toxic added) would leak into the next and make the shrunk example
meaningless.  :func:`serving` starts a server (and a proxy) per example and stops them, with
their loop errors re-raised, when the example ends.  A fixture that really is the same for
every example (a stateless server that each example only connects to) may be kept with
``@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])``.

Hypothesis is an optional dependency (``pip install 'pytest-multiconn[hypothesis]'``); this
module imports it only when a strategy is asked for.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pytest_multiconn.core.checks import check_count, check_seed
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT
from pytest_multiconn.faults import ClientFault, HalfClose, PartialSend, SlowReader
from pytest_multiconn.proxy import (
    Bandwidth,
    Coalesce,
    Corrupt,
    FaultProxy,
    Latency,
    LimitData,
    ProxiedConnection,
    ResetPeer,
    Slicer,
    SlowClose,
    Toxic,
    Truncate,
)
from pytest_multiconn.servers.echo import EchoServer

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

EXTRA = "pytest-multiconn[hypothesis]"
#: The longest pause a schedule may hold (a schedule is a test input, not a soak).
MAX_PAUSE = 60.0


def _st() -> Any:
    """``hypothesis.strategies``, or an ImportError that says which extra to install."""
    try:
        from hypothesis import strategies
    except ImportError as exc:
        raise ImportError(
            f"pytest_multiconn.strategies needs Hypothesis: pip install '{EXTRA}'"
        ) from exc
    return strategies


def note(text: str) -> None:
    """``hypothesis.note(text)`` inside a Hypothesis example (printed with the falsifying
    example); nothing elsewhere."""
    try:
        from hypothesis import note as hypothesis_note
        from hypothesis.errors import InvalidArgument
    except ImportError:
        return
    with contextlib.suppress(InvalidArgument):  # not inside @given / find()
        hypothesis_note(text)


# -- the values drawn (no Hypothesis needed) ----------------------------------------------------
def _pause_ok(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value) and 0 <= value <= MAX_PAUSE)


@dataclass(frozen=True)
class Chunking:
    """How a payload of ``size`` bytes is split into sends: a cut after byte ``k`` for each
    ``k`` in ``cuts`` (so ``Chunking(size=11, cuts=(3,))`` sends 3 bytes, then 8), and
    ``pauses[i]`` seconds of quiet before chunk ``i + 1`` (empty: no pauses)."""

    size: int
    cuts: tuple[int, ...] = ()
    pauses: tuple[float, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        check_count(self.size, "Chunking: size")
        if not isinstance(self.cuts, tuple):
            raise ValueError(f"Chunking: cuts must be a tuple of integers, got {self.cuts!r}")
        for i, cut in enumerate(self.cuts):
            check_count(cut, f"Chunking: cuts[{i}]")
        bounds = [0, *self.cuts, self.size]
        if any(b <= a for a, b in itertools.pairwise(bounds)):
            raise ValueError(
                f"Chunking: cuts must rise strictly within 1..{self.size - 1} "
                f"(every chunk has a byte), got {self.cuts!r}"
            )
        if not isinstance(self.pauses, tuple) or not all(map(_pause_ok, self.pauses)):
            raise ValueError(f"Chunking: pauses must be a tuple of seconds from 0 to "
                             f"{MAX_PAUSE:g}, got {self.pauses!r}")
        if self.pauses and len(self.pauses) != len(self.cuts):
            raise ValueError(f"Chunking: one pause per cut ({len(self.cuts)}), got "
                             f"{len(self.pauses)}")

    def __repr__(self) -> str:
        extra = f", pauses={self.pauses!r}" if self.pauses else ""
        return f"Chunking(size={self.size}, cuts={self.cuts!r}{extra})"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The chunk sizes, in order (they add up to ``size``)."""
        bounds = [0, *self.cuts, self.size]
        return tuple(b - a for a, b in itertools.pairwise(bounds) if b > a)

    def split(self, payload: bytes) -> list[bytes]:
        """``payload`` cut into the chunks (its length must be ``size``)."""
        if len(payload) != self.size:
            raise ValueError(f"{self!r} splits {self.size} bytes, got a payload of "
                             f"{len(payload)}")
        bounds = [0, *self.cuts, self.size]
        return [payload[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    def pause_before(self, index: int) -> float:
        """Seconds of quiet before chunk ``index`` (0 for the first)."""
        return self.pauses[index - 1] if self.pauses and index > 0 else 0.0

    def describe(self) -> str:
        """In words: ``"split after byte 3"``, ``"no split"``..."""
        if not self.cuts:
            return f"no split ({self.size} bytes in one send)"
        words = "byte" if len(self.cuts) == 1 else "bytes"
        text = f"split after {words} {', '.join(map(str, self.cuts))} (chunks {self.sizes})"
        if any(self.pauses):
            text += f", pauses {', '.join(f'{p:g}' for p in self.pauses)} s"
        return text


@dataclass(frozen=True)
class FaultSchedule:
    """Toxics (each with its direction) for a proxy seeded with ``seed``, and client faults:
    one drawn fault schedule, replayable from its ``repr``."""

    seed: int = 0
    toxics: tuple[tuple[Toxic, str], ...] = ()
    client_faults: tuple[ClientFault, ...] = ()

    def __post_init__(self) -> None:
        check_seed(self.seed, "FaultSchedule: seed")
        for entry in self.toxics:
            pair = isinstance(entry, tuple) and len(entry) == 2  # noqa: PLR2004 - a pair
            ok = pair and isinstance(entry[0], Toxic) and entry[1] in (
                "upstream", "downstream", "both")
            if not ok:
                raise ValueError(f"FaultSchedule: toxics are (Toxic, direction) pairs, got "
                                 f"{entry!r}")
        if not all(isinstance(f, ClientFault) for f in self.client_faults):
            raise ValueError(f"FaultSchedule: client_faults must be client faults, got "
                             f"{self.client_faults!r}")

    def apply(self, proxy: FaultProxy) -> list[str]:
        """Add the toxics to ``proxy`` (made with ``seed=self.seed`` to replay); their names."""
        return [proxy.add(toxic, direction=d) for toxic, d in self.toxics]  # type: ignore[arg-type]

    def client_kwargs(self) -> dict[str, Any]:
        """``MultiConnClient(address, n, messages, **schedule.client_kwargs())``: the client
        faults with the same seed, so the client's chunk boundaries replay too."""
        return {"faults": list(self.client_faults), "seed": self.seed}

    def describe(self) -> str:
        parts = [f"{t!r} {d}" for t, d in self.toxics] + [repr(f) for f in self.client_faults]
        return f"faults {', '.join(parts) or 'none'} (replay seed {self.seed})"


# -- strategies ---------------------------------------------------------------------------------
def chunkings(size: int | bytes, *, max_cuts: int = 8,
              max_pause: float = 0.0) -> SearchStrategy[Chunking]:
    """Ways to split ``size`` bytes (or a payload's length) into sends: up to ``max_cuts``
    cuts, and, if ``max_pause`` > 0, a pause of up to that many seconds before each chunk
    after the first.  Shrinks towards fewer cuts, earlier cuts and no pauses."""
    st = _st()
    n = len(size) if isinstance(size, bytes | bytearray) else check_count(size, "chunkings: size")
    check_count(max_cuts, "chunkings: max_cuts")
    if not _pause_ok(max_pause):
        raise ValueError(f"chunkings: max_pause must be seconds from 0 to {MAX_PAUSE:g}, got "
                         f"{max_pause!r}")
    if n < 2 or max_cuts == 0:  # noqa: PLR2004 - a cut needs a byte on each side
        return st.just(Chunking(n))  # type: ignore[no-any-return]
    # st.builds with keywords, so Hypothesis prints the falsifying example as the call that
    # rebuilds it: ``Chunking(size=11, cuts=(1,))``.
    cuts = st.lists(st.integers(1, n - 1), unique=True, max_size=min(max_cuts, n - 1)).map(
        lambda c: tuple(sorted(c)))
    if not max_pause:
        return st.builds(Chunking, size=st.just(n), cuts=cuts)  # type: ignore[no-any-return]

    def with_pauses(c: tuple[int, ...]) -> Any:
        return st.builds(Chunking, size=st.just(n), cuts=st.just(c),
                         pauses=pauses(len(c), max_pause))

    return cuts.flatmap(with_pauses)  # type: ignore[no-any-return]


def pauses(count: int, max_seconds: float = 0.05) -> SearchStrategy[tuple[float, ...]]:
    """``count`` pauses of 0 to ``max_seconds`` seconds each (shrinking to 0)."""
    st = _st()
    check_count(count, "pauses: count")
    if not _pause_ok(max_seconds):
        raise ValueError(f"pauses: max_seconds must be from 0 to {MAX_PAUSE:g}, got "
                         f"{max_seconds!r}")
    one = st.floats(0.0, float(max_seconds), allow_nan=False, allow_infinity=False)
    return st.tuples(*[one] * count)  # type: ignore[no-any-return]


def _toxic_strategies(max_ms: int, max_bytes: int) -> dict[str, Any]:
    st = _st()
    ms = st.integers(0, max_ms)
    size = st.integers(1, max(1, min(max_bytes, 64)))

    def slicer(average: int) -> Any:
        return st.builds(Slicer, average_size=st.just(average),
                         size_variation=st.integers(0, average - 1),
                         delay_us=st.integers(0, max_ms * 1000))

    return {
        "latency": st.builds(Latency, ms=ms, jitter=st.integers(0, max_ms)),
        "bandwidth": st.builds(Bandwidth, bytes_per_second=st.integers(1024, 1 << 20)),
        "slicer": size.flatmap(slicer),
        "limit_data": st.builds(LimitData, bytes=st.integers(0, max_bytes)),
        "reset_peer": st.builds(ResetPeer, timeout_ms=ms),
        "slow_close": st.builds(SlowClose, delay_ms=ms),
        "truncate": st.builds(Truncate, bytes=st.integers(0, max_bytes)),
        "coalesce": st.builds(Coalesce, bytes=size, timeout_ms=st.integers(1, max(1, max_ms))),
        "corrupt": st.builds(Corrupt, offsets=st.lists(st.integers(0, max_bytes), min_size=1,
                                                       max_size=4, unique=True)
                             .map(lambda o: tuple(sorted(o)))),
    }


#: What :func:`toxics` draws from by default: every toxic that ends by itself within a test
#: (``timeout`` stalls until removed, ``substitute`` needs a pattern: pass your own).
DEFAULT_TOXICS = ("latency", "slicer", "coalesce", "truncate", "limit_data", "corrupt",
                  "bandwidth", "slow_close", "reset_peer")


def toxics(kinds: Sequence[str] = DEFAULT_TOXICS, *, max_ms: int = 20,
           max_bytes: int = 64) -> SearchStrategy[Toxic]:
    """One toxic of one of ``kinds`` (toxiproxy type names) with drawn parameters: delays up
    to ``max_ms`` ms, sizes and offsets up to ``max_bytes``.  Shrinks towards the first kind
    listed and small parameters; list the harmless kinds first."""
    st = _st()
    table = _toxic_strategies(max_ms, max_bytes)
    unknown = [k for k in kinds if k not in table]
    if unknown or not kinds:
        raise ValueError(f"toxics: unknown kinds {unknown!r}; known: {', '.join(table)}")
    return st.one_of(*[table[k] for k in kinds])  # type: ignore[no-any-return]


def client_faults(kinds: Sequence[str] = ("partial_send", "slow_reader", "half_close"), *,
                  max_pause: float = 0.005) -> SearchStrategy[ClientFault]:
    """One client fault of ``kinds`` with drawn parameters (pauses up to ``max_pause`` s)."""
    st = _st()
    delay = st.floats(0.0, max_pause, allow_nan=False)
    table = {
        "partial_send": st.builds(PartialSend, max_chunk=st.integers(1, 16), delay=delay),
        "slow_reader": st.builds(SlowReader, bytes_per_second=st.integers(1024, 1 << 20),
                                 delay=delay),
        "half_close": st.just(HalfClose()),
    }
    unknown = [k for k in kinds if k not in table]
    if unknown or not kinds:
        raise ValueError(f"client_faults: unknown kinds {unknown!r}; known: {', '.join(table)}")
    return st.one_of(*[table[k] for k in kinds])  # type: ignore[no-any-return]


def fault_schedules(toxic: SearchStrategy[Toxic] | None = None, *, max_toxics: int = 3,
                    directions: Sequence[str] = ("upstream", "downstream"),
                    client_fault: SearchStrategy[ClientFault] | None = None,
                    max_client_faults: int = 0) -> SearchStrategy[FaultSchedule]:
    """Fault schedules: up to ``max_toxics`` toxics drawn from ``toxic`` (default
    :func:`toxics`), each on one of ``directions``, up to ``max_client_faults`` client faults
    from ``client_fault``, and the proxy seed.  Shrinks towards fewer faults, the first
    direction, simpler parameters and seed 0."""
    st = _st()
    for name, value in (("max_toxics", max_toxics), ("max_client_faults", max_client_faults)):
        check_count(value, f"fault_schedules: {name}")
    bad = [d for d in directions if d not in ("upstream", "downstream", "both")]
    if bad or not directions:
        raise ValueError(f"fault_schedules: directions must be some of 'upstream', "
                         f"'downstream', 'both', got {list(directions)!r}")
    entry = st.tuples(toxics() if toxic is None else toxic, st.sampled_from(list(directions)))
    faults = st.lists(client_faults() if client_fault is None else client_fault,
                      max_size=max_client_faults).map(tuple)
    return st.builds(FaultSchedule, seed=st.integers(0, 2**32 - 1),  # type: ignore[no-any-return]
                     toxics=st.lists(entry, max_size=max_toxics).map(tuple),
                     client_faults=faults)


# -- applying a schedule to real connections ------------------------------------------------------
def send_chunks(sock: socket.socket, chunks: Iterable[bytes],
                pause_before: Callable[[int], float] = lambda i: 0.0) -> None:
    """Send each chunk with its own ``sendall`` (TCP_NODELAY on, so none waits for another),
    after ``pause_before(i)`` seconds of quiet.  The *server* may still read two chunks in
    one ``recv`` if it reads late; :meth:`Served.send` makes the split exact."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i, chunk in enumerate(chunks):
        pause = pause_before(i)
        if pause:
            time.sleep(pause)  # the pause is the schedule under test, not a synchronisation
        sock.sendall(chunk)


def release_chunks(conn: ProxiedConnection, sizes: Iterable[int], direction: str = "upstream",
                   *, delivered: Callable[[int], object] | None = None,
                   pause_before: Callable[[int], float] = lambda i: 0.0,
                   timeout: float | None = None) -> None:
    """Through a held proxied connection (step mode), pass on exactly ``sizes`` bytes in
    ``direction``, one write each; ``delivered(total)``, if given, blocks until the receiver
    has read ``total`` bytes of them, so each of its reads is one chunk."""
    total = 0
    for i, size in enumerate(sizes):
        pause = pause_before(i)
        if pause:
            time.sleep(pause)  # the pause is the schedule under test, not a synchronisation
        conn.release(size, direction, timeout)  # type: ignore[arg-type]
        total += size
        if delivered is not None:
            delivered(total)


class CountsBytes(Protocol):
    """A server that can say how many bytes it has read (``ServerBase`` can): what makes a
    split exact at the server, not only at the proxy."""

    def stats(self) -> Any: ...  # .bytes_in: bytes read so far

    def wait_for_bytes(self, n: int, timeout: float = ...) -> Any: ...


class Served:
    """What :func:`serving` yields: the server, the proxy in front of it (or None), and
    helpers to connect and send on a schedule.  Everything stops when the block ends."""

    def __init__(self, server: Any, proxy: FaultProxy | None, timeout: float) -> None:
        self.server = server
        self.proxy = proxy
        self.timeout = timeout
        self._socks: list[socket.socket] = []
        self._conns: dict[int, ProxiedConnection] = {}

    @property
    def address(self) -> Any:
        """Where clients connect: the proxy's address, or the server's without a proxy."""
        return (self.proxy or self.server).address

    def connect(self) -> socket.socket:
        """A connected client socket (TCP_NODELAY, ``timeout`` on every call), closed at the
        end of the block."""
        address = self.address
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(address)
        else:
            sock = socket.create_connection(address, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socks.append(sock)
        if self.proxy is not None:
            self._conns[sock.fileno()] = self.proxy.wait_for_connection(self.timeout)
        return sock

    def connection(self, sock: socket.socket) -> ProxiedConnection:
        """The proxy's handle on ``sock``'s connection."""
        try:
            return self._conns[sock.fileno()]
        except KeyError:
            raise ValueError(f"{sock!r} was not made by connect() through a proxy") from None

    def send(self, sock: socket.socket, payload: bytes, chunking: Chunking | None = None,
             ) -> None:
        """Send ``payload`` split as ``chunking`` says.  Through the proxy the split is exact
        at the server: the proxy holds the bytes and releases one chunk per write, and, for a
        server that counts what it reads (:class:`CountsBytes`), waits until the server has
        read each chunk before releasing the next, so every server ``recv`` is one chunk."""
        chunking = Chunking(len(payload)) if chunking is None else chunking
        chunks = chunking.split(payload)
        note(f"sending {len(payload)} bytes: {chunking.describe()}")
        if self.proxy is None:
            send_chunks(sock, chunks, chunking.pause_before)
            return
        conn = self.connection(sock)
        delivered = None
        server = self.server
        if callable(getattr(server, "wait_for_bytes", None)) and callable(
                getattr(server, "stats", None)):
            base = server.stats().bytes_in

            def delivered(total: int) -> None:
                server.wait_for_bytes(base + total, self.timeout)

        conn.hold("upstream")
        try:
            sock.sendall(payload)
            release_chunks(conn, chunking.sizes, "upstream", delivered=delivered,
                           pause_before=chunking.pause_before, timeout=self.timeout)
        finally:
            conn.unhold("upstream")

    def recv_line(self, sock: socket.socket, limit: int = 65536) -> bytes:
        """Read up to and including the next ``\\n`` (bounded by ``limit`` bytes and the
        socket's timeout); what was read if the peer closed first."""
        buf = bytearray()
        while len(buf) < limit:
            byte = sock.recv(1)
            if not byte:
                break
            buf += byte
            if byte == b"\n":
                break
        return bytes(buf)

    def report(self) -> str:
        """The proxy's report (transcripts of every connection), for a failure message."""
        return self.proxy.report() if self.proxy is not None else repr(self.server)

    def close(self) -> None:
        """Close every socket ``connect()`` opened (``serving`` does it on exit)."""
        for sock in self._socks:
            sock.close()
        self._socks.clear()


@contextlib.contextmanager
def serving(server: Callable[[], Any] = EchoServer, *, proxy: bool = True,
            schedule: FaultSchedule | None = None, seed: int | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> Iterator[Served]:
    """Per example: start ``server()`` (a server class or factory whose result is a context
    manager with ``address``; default :class:`EchoServer`) and, with ``proxy``, a
    :class:`FaultProxy` in front of it seeded with ``schedule.seed`` (or ``seed``) with the
    schedule's toxics; yield a :class:`Served`; stop both at the end, re-raising their loop
    errors.  Safe inside ``@given`` (no fixture involved)."""
    if schedule is not None and not proxy:
        raise ValueError("serving: a FaultSchedule needs the proxy (proxy=True)")
    check_seed(seed, "serving: seed", optional=True)
    proxy_seed = schedule.seed if schedule is not None else seed
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(server())
        front = None
        if proxy:
            front = stack.enter_context(FaultProxy(srv.address, seed=proxy_seed,
                                                   timeout=timeout))
            if schedule is not None:
                schedule.apply(front)
                note(schedule.describe())
        served = Served(srv, front, timeout)
        stack.callback(served.close)
        yield served


__all__ = [
    "DEFAULT_TOXICS",
    "EXTRA",
    "Chunking",
    "CountsBytes",
    "FaultSchedule",
    "Served",
    "chunkings",
    "client_faults",
    "fault_schedules",
    "note",
    "pauses",
    "release_chunks",
    "send_chunks",
    "serving",
    "toxics",
]
