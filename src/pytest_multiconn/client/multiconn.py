"""The tutorial's multi-connection client, done properly: :class:`MultiConnClient`."""

from __future__ import annotations

import bisect
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pytest_multiconn.core.address import (
    Address,
    SocketAddress,
    check_host,
    parse_port,
    socket_address,
)
from pytest_multiconn.core.blocking import refuse_in_event_loop, to_thread
from pytest_multiconn.core.checks import check_bool, check_count, check_items, check_seconds
from pytest_multiconn.core.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_TRANSCRIPT_LIMIT,
    Connection,
)
from pytest_multiconn.core.defaults import DEFAULT_MESSAGES as _DEFAULT_MESSAGES
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Loop
from pytest_multiconn.core.seed import default_seed, derive_seed
from pytest_multiconn.errors import EchoMismatch, ReplyMismatch, WaitTimeout
from pytest_multiconn.exchanges.base import Exchange, ReplyReader
from pytest_multiconn.exchanges.garbage import no_garbage_answers
from pytest_multiconn.exchanges.simple import Echo
from pytest_multiconn.faults.client import ClientFault, check_faults, describe
from pytest_multiconn.faults.client_driver import FaultDriver
from pytest_multiconn.tls.config import ClientTLS, client_tls

#: The exchange of a client that echoes its messages (its fast path never asks it anything).
ECHO = Echo()

#: The tutorial's two messages (defined in core, where the plugin reads it without this module).
DEFAULT_MESSAGES = _DEFAULT_MESSAGES

#: Observer signature: ``(event, connection number, data)``; event is "start", "send",
#: "recv" or "close".
ClientObserver = Callable[[str, int, "bytes | None"], None]


#: What a message may be (each is sent as ``bytes(message)``).
_BYTES_LIKE = (bytes, bytearray, memoryview)

#: How many bytes of a wrong reply a result shows.
_WHOLE_REPLY_SHOWN = 200

#: How many failed connections an error message lists.
_MAX_LISTED = 10


@dataclass(frozen=True)
class ConnectionResult:
    """What one client connection sent, got back, and how it ended."""

    conn_id: int
    sent: int
    received: int
    expected: int
    matched: bool
    elapsed: float
    error: str | None
    transcript: str = ""
    first_mismatch: int | None = None
    #: Names of the faults this connection ran with ("" for none), e.g. "partial_send+reset".
    faults: str = ""
    #: What the faults did or saw (e.g. "stalled after 4194304 B"); "" without faults.
    note: str = ""
    #: Bytes taken by each ``send`` call (first 4096), recorded only for faulty connections:
    #: the same seed gives the same sizes.
    send_sizes: tuple[int, ...] = ()
    #: The connection stayed open after its exchange (NeverClose, Silent, NeverRead).
    lingering: bool = False
    #: With an exchange: which reply was wrong or missing, expected vs got ("" when right).
    problem: str = ""
    #: ``expected`` counts the bytes of the exchange's replies, not an echo of what was sent
    #: (an ``exchange=`` other than echo): the text then speaks of replies.
    replies: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.matched

    def __str__(self) -> str:
        what = "the replies differed" if self.replies else "echo differed"
        status = "ok" if self.ok else f"FAILED: {self.error or what}"
        where = "" if self.first_mismatch is None else f" ({what} at byte {self.first_mismatch})"
        if self.error is None and self.first_mismatch is not None:
            status, where = f"FAILED: {what} at byte {self.first_mismatch}", ""
        if self.problem:
            status, where = f"FAILED: {self.error + '; ' if self.error else ''}{self.problem}", ""
        faults = f" [{self.faults}]" if self.faults else ""
        note = f" ({self.note})" if self.note else ""
        if self.replies:
            # Requests and replies differ in size: what was sent is not what should come back.
            amounts = f"sent {self.sent} B, received {self.received} B"
            if self.expected:
                amounts += f" ({self.expected} B of replies expected)"
        else:
            # No exact byte count to compare with (garbage, never-read): just sent.
            sent = (f"{self.sent}/{self.expected}" if self.expected or not self.sent
                    else f"{self.sent}")
            amounts = f"sent {sent} B, received {self.received} B"
        return (
            f"connection {self.conn_id}{faults}: {amounts} in {self.elapsed * 1e3:.1f} ms, "
            f"{status}{where}{note}"
        )


class ClientResults(list[ConnectionResult]):
    """One :class:`ConnectionResult` per connection, in connection order."""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self)

    @property
    def failed(self) -> list[ConnectionResult]:
        return [r for r in self if not r.ok]

    def check(self) -> ClientResults:
        """Raise :class:`EchoMismatch` (an echo client) or :class:`ReplyMismatch` (a client
        with an ``exchange``) describing every failed connection; return self."""
        failed = self.failed
        if failed:
            lines = "\n".join(
                f"  {r}" + (f"\n{r.transcript}" if r.transcript else "")
                for r in failed[:_MAX_LISTED]
            )
            more = (
                f"\n  ... and {len(failed) - _MAX_LISTED} more" if len(failed) > _MAX_LISTED else ""
            )
            error = ReplyMismatch if any(r.replies for r in failed) else EchoMismatch
            raise error(f"{len(failed)} of {len(self)} connections failed:\n{lines}{more}")
        return self


def _first_mismatch(expected: bytes, start: int, data: bytes) -> int | None:
    """Where ``data``, received at offset ``start``, first differs from ``expected`` (a byte
    past its end counts); None when it matches."""
    chunk = expected[start : start + len(data)]
    if chunk == data:
        return None
    for i, (a, b) in enumerate(zip(chunk, data, strict=False)):
        if a != b:
            return start + i
    return start + len(chunk)


class ClientConnection(Connection):
    """Sends its messages, reads until it got that many bytes back, then closes."""

    def __init__(
        self,
        client: MultiConnClient,
        conn_id: int,
        sock: socket.socket,
        faults: Sequence[ClientFault] = (),
    ) -> None:
        super().__init__(
            client.loop,
            sock,
            client.address,
            high_water=client.high_water,
            transcript_limit=client.transcript_limit,
            label=f"client-{conn_id}",
        )
        self.client = client
        self.conn_id = conn_id
        #: What the connection speaks (Echo() for the client's echo messages).
        self.exchange: Exchange = client.exchange or ECHO
        #: With a non-echo exchange: a copy of what came back, and a reader that splits it
        #: into replies (``None`` for echo, whose fast path stays as it was).
        self.reader: ReplyReader | None = None
        self.got: bytearray | None = None
        #: The replies are judged by ``reader`` (parsed, not exact bytes).
        self.parsed = False
        #: The payload is garbage, judged by the exchange's garbage answers (faults only).
        self.garbage = False
        self.expected = b""
        if client.exchange is None:
            self.messages = client.messages
        else:
            rng = random.Random(derive_seed(client.seed, "exchange", conn_id))
            self.messages = tuple(client.exchange.requests(client.requests, rng))
            self.got = bytearray()
        self.expect(b"".join(self.messages))
        #: Requests (messages) written so far; with ``pipeline=False`` one more after each
        #: reply, else all of them at once.
        self.sent_requests = 0
        #: Where each request's reply ends in what comes back (exact replies and echo), for
        #: sequential sending; parsed replies are counted by the reader instead.
        self.reply_ends: list[int] = []
        if not client.pipeline:
            end = 0
            for message in self.messages:
                want = (message if client.exchange is None
                        else client.exchange.expected(message) or b"")
                end += len(want)
                self.reply_ends.append(end)
        self.received = 0
        self.mismatch_at: int | None = None
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.failure: str | None = None
        self.done = False
        self.lingering = False
        self.notes: list[str] = []
        self.driver: FaultDriver | None = None
        if faults:
            seed = client.seed
            self.driver = FaultDriver(
                self,
                [
                    f.session(self, f.rng(seed, conn_id, i))
                    for i, f in enumerate(faults)
                ],
            )

    def expect(self, payload: bytes, *, garbage: bool = False) -> None:
        """Set what comes back for ``payload`` (the faults may have changed it): the payload
        itself for echo; the exact replies of the requests, or a reader that parses them; for
        garbage, the answer the exchange allows (judged by the fault driver)."""
        exchange = self.client.exchange
        self.parsed = self.garbage = False
        if exchange is None or isinstance(exchange, Echo):
            self.expected = payload
            return
        if garbage:
            # A server that echoes garbage is checked byte for byte; any other is judged by
            # what it does first (exchanges/garbage.py).
            echoes = "echo" in (exchange.garbage_answers() or ())
            self.expected = payload if echoes else b""
            self.garbage = not echoes
            self.reader = None
            return
        # No payload (Silent, ConnectClose): no request, so no reply either.
        sent = self.messages if payload else ()
        self.reader = ReplyReader(exchange, sent)
        if self.client.exact:
            self.expected = b"".join(exchange.expected(r) or b"" for r in sent)
        else:
            self.expected = b""
            self.parsed = True

    @property
    def replies_complete(self) -> bool:
        """Every reply this connection waits for has arrived (True when it waits for none)."""
        if self.garbage:
            return True
        if self.parsed and self.reader is not None:
            return self.reader.complete or self.reader.closed_after is not None
        return self.received >= len(self.expected)

    def connection_made(self) -> None:
        if self.driver is not None:
            self.driver.connection_made()
            return
        if self.client.pipeline:
            while self.sent_requests < len(self.messages):
                self._send_request()
        elif self.messages:
            self._send_request()
        if not self.expected and self.client.exact:
            self.complete()

    def _send_request(self) -> None:
        message = self.messages[self.sent_requests]
        self.sent_requests += 1
        observer = self.client.on_event
        if observer is not None:
            observer("send", self.conn_id, message)
        self.write(message)

    def _send_next_after(self, replies: int) -> None:
        """Sequential requests: send the next ones once ``replies`` replies have come."""
        while (not self.closed and self.sent_requests < len(self.messages)
               and replies >= self.sent_requests):
            self._send_request()

    def data_received(self, data: bytes) -> None:
        if self.client.on_event is not None:
            self.client.on_event("recv", self.conn_id, data)
        start = self.received
        self.received += len(data)
        if self.got is not None:
            self.got += data
        driver = self.driver
        if self.garbage and driver is not None:
            driver.received(data)
            driver.garbage_answered(data)
            return
        if self.parsed and self.reader is not None:
            self._received_replies(self.reader, data)
            return
        if self.mismatch_at is None:
            self.mismatch_at = _first_mismatch(self.expected, start, data)
        if driver is not None:
            driver.received(data)
            if self.closed:
                return
            if self.mismatch_at is not None:
                driver.reply_wrong()
            elif self.received >= len(self.expected):
                driver.replies_done()
        elif self.mismatch_at is not None or self.received >= len(self.expected):
            # A byte that differs makes the verdict certain: waiting for the rest of the
            # reply (or for the timeout, when it never comes) cannot change it.
            self.complete()
        elif not self.client.pipeline:
            self._send_next_after(bisect.bisect_right(self.reply_ends, self.received))

    def _received_replies(self, reader: ReplyReader, data: bytes) -> None:
        judged = reader.feed(data)
        if self.driver is not None:
            self.driver.received(data)  # after feeding: replies_complete is up to date
        if self.closed:
            return
        if any(not o.ok for o in judged):
            self.complete()  # a wrong reply: the rest of the stream cannot be trusted
        elif self.replies_complete:
            if self.driver is not None:
                self.driver.replies_done()
            else:
                self.complete()
        elif not self.client.pipeline:
            self._send_next_after(len(reader.outcomes))

    # -- used by faults -------------------------------------------------------------------
    def fault_note(self, text: str) -> None:
        """Record what a fault did (shown in the result and the transcript)."""
        self.notes.append(text)
        self.transcript.record("note", note=text)

    def exchange_done(self) -> None:
        """A fault says this connection's exchange is over (it may linger)."""
        if self.driver is not None:
            self.driver.exchange_done()

    def linger(self) -> None:
        """Count the exchange as done but keep the socket open until the client closes."""
        if self.done:
            return
        self.lingering = True
        self._mark_done()

    def deliberate_reset(self, note: str) -> None:
        if self.driver is not None:
            self.driver.end(note, reset=True)

    def deliberate_close(self, note: str) -> None:
        if self.driver is not None:
            self.driver.end(note, reset=False)

    def after_send(self, sent: int) -> None:
        if self.driver is not None:
            self.driver.after_send(sent)

    def pause_writing(self) -> None:
        if self.driver is not None:
            self.driver.writing_paused()

    def resume_writing(self) -> None:
        if self.driver is not None:
            self.driver.writing_resumed()

    def _mark_done(self) -> None:
        if not self.done:
            self.finished_at = time.monotonic()
            self.done = True
            self.client.connection_done()

    def complete(self) -> None:
        """The exchange is over (every reply in, or a fault driver says so): judge the excess
        bytes of an exact exchange, and close."""
        if self.parsed or self.garbage:
            if self.client.on_event is not None:
                self.client.on_event("close", self.conn_id, None)
            self.close(reason="complete")
            return
        if self.received > len(self.expected):
            extra = self.received - len(self.expected)
            self.failure = (f"received {extra} B more than the expected replies" if self.replies
                            else f"received {extra} bytes more than sent")
        if self.client.on_event is not None:
            self.client.on_event("close", self.conn_id, None)
        self.close(reason="complete")

    def on_eof(self) -> None:
        if self.driver is not None:
            self.driver.on_eof()
            return
        if self.parsed and self.reader is not None:
            self.reader.eof()
            if self.replies_complete:
                self.close(reason="complete")
                return
            self.failure = (
                f"server closed the connection after {len(self.reader.outcomes)} of "
                f"{len(self.reader.requests)} replies"
            )
            self.close(reason="eof before every reply")
            return
        if self.replies:
            self.failure = (
                f"server closed the connection after {self.received} of the "
                f"{len(self.expected)} B of replies expected"
            )
            self.close(reason="eof before every reply")
            return
        self.failure = (
            f"server closed the connection after echoing {self.received} of "
            f"{len(self.expected)} bytes"
        )
        self.close(reason="eof before full echo")

    def connection_lost(self, exc: BaseException | None) -> None:
        driver = self.driver
        deliberate = driver is not None and (driver.deliberate or driver.lost(exc))
        if exc is not None and self.failure is None and not deliberate:
            self.failure = f"{type(exc).__name__}: {exc}"
        if self.driver is not None:
            self.driver.closed()
        self._mark_done()

    def timeout_failure(self, timeout: float) -> str:
        """Why this connection failed when the client's ``timeout`` ran out."""
        if self.driver is not None:
            why = self.driver.timeout_failure(timeout)
            if why is not None:
                return why
        if self.parsed and self.reader is not None:
            return (
                f"timed out after {timeout}s: sent {self.bytes_out} B, received "
                f"{self.received} B, {len(self.reader.outcomes)} of "
                f"{len(self.reader.requests)} replies"
            )
        if self.replies:
            return (
                f"timed out after {timeout}s: sent {self.bytes_out} B, received "
                f"{self.received} of the {len(self.expected)} B of replies expected"
            )
        return (
            f"timed out after {timeout}s: sent {self.bytes_out}/{len(self.expected)} B, "
            f"received {self.received} B"
        )

    @property
    def replies(self) -> bool:
        """``expected`` is the exchange's replies, not an echo of what was sent."""
        exchange = self.client.exchange
        return exchange is not None and not isinstance(exchange, Echo)

    def _whole_reply(self, reader: ReplyReader, got: bytearray) -> str:
        # The judge frames what came by the expected replies' lengths, so it shows as many
        # bytes as were expected; say what came from the wrong reply on, in full (bounded).
        at = self.mismatch_at if self.mismatch_at is not None else len(self.expected)
        start = 0
        for request in reader.requests:
            size = len(reader.exchange.expected(request) or b"")
            if at < start + size:
                break
            start += size
        rest = bytes(got[start:])
        shown = repr(rest[:_WHOLE_REPLY_SHOWN])
        if len(rest) > _WHOLE_REPLY_SHOWN:
            shown += f"... ({len(rest) - _WHOLE_REPLY_SHOWN} B more)"
        return f"; from that reply on, got {shown} ({len(rest)} B)"

    def result(self) -> ConnectionResult:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        driver = self.driver
        problem = ""
        if driver is not None:
            matched = driver.matched()
            problem = driver.problem()
        elif self.parsed and self.reader is not None:
            problem = self.reader.first_problem() or ""
            matched = not problem
        else:
            matched = self.mismatch_at is None and self.received == len(self.expected)
        if (not problem and not matched and not self.parsed and self.reader is not None
                and self.got is not None):
            # Exact replies: name the reply by splitting what came back as the exchange frames.
            judge = ReplyReader(self.reader.exchange, self.reader.requests)
            judge.feed(bytes(self.got))
            problem = judge.first_problem() or ""
            if problem and (self.mismatch_at is not None
                            or self.received > len(self.expected)):
                problem += self._whole_reply(self.reader, self.got)
        return ConnectionResult(
            conn_id=self.conn_id,
            sent=self.bytes_out,
            received=self.received,
            expected=len(self.expected),
            matched=matched,
            elapsed=end - self.started,
            error=self.failure,
            transcript="" if matched and self.failure is None else self.transcript.format("    "),
            first_mismatch=self.mismatch_at,
            faults=driver.names if driver is not None else "",
            note="; ".join(self.notes),
            send_sizes=tuple(driver.send_sizes) if driver is not None else (),
            lingering=self.lingering and not self.closed,
            problem=problem,
            replies=self.replies,
        )


class MultiConnClient:
    """Open ``num_connections`` non-blocking connections; each sends ``messages`` and reads
    the echo back.  ``run()`` drives one selector in the calling thread, bounded by
    ``timeout``, and returns one :class:`ConnectionResult` per connection.

    It targets any ``(host, port)`` (or a Unix socket path), so it can be aimed at your own
    server; non-loopback hosts need ``allow_remote=True``.

    ``exchange=Lines()`` (or ``HTTP()``, ``RESP()``, ``Exact(...)``; see
    :mod:`pytest_multiconn.exchanges`) speaks a protocol instead of echo: each connection
    sends ``requests`` requests of it and judges the replies.  By default the requests (or
    the echo ``messages``) are **pipelined**: written back to back as soon as the connection
    is up, without waiting for any reply, so a server reads several in one ``recv`` and must
    answer them in order.  ``pipeline=False`` sends them **sequentially**, as a client that
    waits for each answer does: one request, its whole reply, then the next.  Real clients do
    both; test your server with each.  (Client faults decide what is sent when, so they run
    pipelined only.)

    ``faults=[PartialSend(max_chunk=1), HalfClose()]`` makes connections misbehave (see
    :mod:`pytest_multiconn.faults`); every random choice comes from ``seed`` (default: the
    run seed and the current test's node id), so a seed replays the same chunk boundaries.
    Connections whose faults linger (NeverClose, Silent, NeverRead) count as done when their
    exchange is, and are closed when ``run()`` returns unless ``keep_open=True``: then they stay
    open until :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(
        self,
        address: Address,
        num_connections: int = 2,
        messages: Iterable[bytes] = DEFAULT_MESSAGES,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        allow_remote: bool = False,
        high_water: int = DEFAULT_HIGH_WATER,
        transcript_limit: int = DEFAULT_TRANSCRIPT_LIMIT,
        on_event: ClientObserver | None = None,
        faults: Iterable[ClientFault] = (),
        seed: int | None = None,
        keep_open: bool = False,
        tls: Any = None,
        server_hostname: str | None = None,
        exchange: Exchange | None = None,
        requests: int = 1,
        pipeline: bool = True,
    ) -> None:
        check_count(num_connections, "num_connections", minimum=1)
        timeout = check_seconds(timeout, "timeout")
        check_count(transcript_limit, "transcript_limit", minimum=0)
        self.address = _check_target(address, allow_remote=allow_remote)
        #: TLS (a ClientTLS) when given ``tls=`` (an SSLContext such as ``server.client_tls``).
        self.tls: ClientTLS | None = None
        if tls is not None:
            self.tls = client_tls(tls, self.address, server_hostname)
        self.faults = check_faults(faults)
        check_bool(pipeline, "pipeline")
        if not pipeline and self.faults:
            raise ValueError(
                "pipeline=False (sequential requests) cannot run with client faults, which "
                f"decide themselves what is sent when; got faults={describe(self.faults)}"
            )
        #: Send every request (message) at once, back to back (True), or each after the reply
        #: to the one before (False).
        self.pipeline = pipeline
        #: The exchange (None: echo ``messages``); ``requests`` per connection (pipelined,
        #: unless ``pipeline=False``).
        self.exchange, self.exact, self.requests = _check_exchange(
            exchange, requests, self.faults
        )
        for fault in self.faults:
            num_connections = fault.connection_count(num_connections)
        self.num_connections = num_connections
        self.seed = default_seed() if seed is None else int(seed)
        self.keep_open = keep_open
        self.messages: Sequence[bytes] = tuple(
            bytes(m) for m in check_items(messages, "messages", _BYTES_LIKE, "bytes")
        )
        self.timeout = timeout
        self.high_water = high_water
        self.transcript_limit = transcript_limit
        self.on_event = on_event
        self.loop: Loop  # made by run(): it owns a socketpair, closed before run() returns
        self.connections: list[ClientConnection] = []
        #: What ``run()`` returned (None before it ran).
        self.results: ClientResults | None = None
        self._pending = 0

    def __repr__(self) -> str:
        # getattr: a constructor that raised leaves a half-built object, and a traceback or a
        # debugger shows it; repr() must not raise a second error there.
        faults = getattr(self, "faults", ())
        seed = getattr(self, "seed", None)
        fault_text = f" faults={describe(faults)} seed={seed}" if faults else ""
        return (
            f"<MultiConnClient to {getattr(self, 'address', '?')!r} "
            f"connections={getattr(self, 'num_connections', '?')} "
            f"pending={getattr(self, '_pending', 0)}{fault_text}>"
        )

    def _faults_for(self, conn_id: int) -> list[ClientFault]:
        if not self.faults:
            return []
        return [f for i, f in enumerate(self.faults) if f.applies(self.seed, conn_id, i)]

    @property
    def lingering(self) -> list[ClientConnection]:
        """Connections that finished their exchange and are still open."""
        return [c for c in self.connections if c.lingering and not c.closed]

    def wait_closed_by_peer(self, timeout: float | None = None) -> int:
        """Drive the loop until the server closed every lingering connection; return how many
        it closed.  Raises :class:`WaitTimeout` naming the ones still open after ``timeout``
        (default: the client's ``timeout``): a wait that ran out, not a wrong reply."""
        refuse_in_event_loop(
            "MultiConnClient.wait_closed_by_peer()", "await client.await_closed_by_peer(...)"
        )
        timeout = self.timeout if timeout is None else timeout
        open_before = len(self.lingering)
        if open_before and not self.loop.closed:
            self.loop.run_until(lambda: not self.lingering, timeout)
            self.loop.check()
        still = self.lingering
        if still:
            names = ", ".join(c.label for c in still[:10])
            raise WaitTimeout(
                f"{len(still)} of {open_before} lingering connections were not closed by the "
                f"server within {timeout}s: {names}"
            )
        return open_before

    def close(self) -> None:
        """Close lingering connections and the loop (idempotent)."""
        for conn in self.connections:
            if not conn.closed:
                conn.close(reason="client closed")
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.close()

    def __enter__(self) -> MultiConnClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- awaitable twins (see core/blocking.py) ------------------------------------------------
    async def arun(self) -> ClientResults:
        """Awaitable twin of :meth:`run`: the client's loop runs in a worker thread, so a server
        on the caller's event loop (asyncio or trio) keeps serving.  Needs ``[async]``."""
        return await to_thread(self.run)

    async def await_closed_by_peer(self, timeout: float | None = None) -> int:
        """Awaitable twin of :meth:`wait_closed_by_peer`."""
        return await to_thread(self.wait_closed_by_peer, timeout)

    async def __aenter__(self) -> MultiConnClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _family(self) -> socket.AddressFamily:
        if isinstance(self.address, str):
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET

    def connection_done(self) -> None:
        """Loop thread: one of this client's connections finished (``run()`` waits for all)."""
        self._pending -= 1

    def run(self) -> ClientResults:
        """Connect, exchange, close; never blocks longer than ``timeout``."""
        refuse_in_event_loop("MultiConnClient.run()", "await client.arun()")
        if self.connections:
            raise RuntimeError(f"{self!r} already ran; create a new client")
        deadline_started = time.monotonic()
        self.loop = Loop("multiconn-client")
        try:
            for conn_id in range(1, self.num_connections + 1):
                if self.on_event is not None:
                    self.on_event("start", conn_id, None)
                sock = socket.socket(self._family(), socket.SOCK_STREAM)
                try:
                    conn = ClientConnection(self, conn_id, sock, self._faults_for(conn_id))
                except BaseException:
                    sock.close()  # not in self.connections yet: close() would not see it
                    raise
                if self.tls is not None:
                    conn.use_layer(self.tls.new_layer(conn))
                self.connections.append(conn)
                self._pending += 1
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if conn.driver is not None:
                    conn.driver.prepare()
                conn.connect(self.address)
            remaining = self.timeout - (time.monotonic() - deadline_started)
            self.loop.run_until(lambda: self._pending <= 0, max(remaining, 0.0))
            for conn in self.connections:
                if not conn.done:
                    conn.failure = conn.timeout_failure(self.timeout)
                    conn.close(reason="client timeout")
            self.loop.check()
            results = ClientResults(c.result() for c in self.connections)
        except BaseException:
            self.close()
            raise
        self.results = results
        if not (self.keep_open and self.lingering):
            self.close()
        return results


def _check_exchange(
    exchange: Exchange | None, requests: int, faults: Sequence[ClientFault]
) -> tuple[Exchange | None, bool, int]:
    """``(exchange or None for echo, whether its replies are exact bytes, requests)``."""
    check_count(requests, "requests", minimum=1)
    if exchange is None or (isinstance(exchange, Echo) and not exchange.messages
                            and exchange.size is None):
        return None, True, requests
    if not isinstance(exchange, Exchange):
        raise TypeError(f"exchange must be an Exchange (pytest_multiconn.exchanges), got "
                        f"{exchange!r}")
    exact = _exact(exchange)
    for fault in faults:
        why = unsupported_fault(exchange, fault)
        if why is not None:
            raise ValueError(why)
    return exchange, exact, requests


def _exact(exchange: Exchange) -> bool:
    return all(exchange.expected(r) is not None for r in exchange.requests(1, random.Random(0)))


def unsupported_fault(exchange: Exchange | None, fault: ClientFault) -> str | None:
    """Why ``fault`` cannot run with ``exchange`` (None: it can).

    Every client fault runs with every exchange (exact replies are compared byte for byte,
    parsed ones judged by the exchange's reader), except Garbage with an exchange that does
    not say what a server may answer to garbage.
    """
    if exchange is None or isinstance(exchange, Echo):
        return None
    if fault.name == "garbage":
        return no_garbage_answers(exchange, "Garbage (random bytes instead of requests)")
    return None


def _check_target(address: Address, *, allow_remote: bool) -> SocketAddress:
    address = socket_address(address)
    if isinstance(address, str):
        return address  # a Unix socket path
    try:
        host, port, *rest = address
    except (TypeError, ValueError):
        raise ValueError(
            f"address must be (host, port) or a Unix socket path, got {address!r}"
        ) from None
    host = check_host(host, allow_remote=allow_remote, role="connect to")
    if not rest:
        return (host, parse_port(port))
    if len(rest) != 2:  # noqa: PLR2004 - (host, port, flowinfo, scope_id)
        raise ValueError(
            f"address must be (host, port) or a Unix socket path, got {address!r}"
        )
    return (host, parse_port(port), int(rest[0]), int(rest[1]))


def run_clients(address: Address, num_connections: int = 2, **kwargs: Any) -> ClientResults:
    """Shorthand for ``MultiConnClient(address, num_connections, **kwargs).run()``."""
    return MultiConnClient(address, num_connections, **kwargs).run()
