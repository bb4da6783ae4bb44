"""The per-connection driver of client faults: runs the sessions, decides when the exchange
is over and whether it went right.

A faulty connection is judged one of three ways, chosen once the faults picked the payload:

* exact bytes (echo, and exchanges whose replies are known bytes): the fast path, counting
  and comparing bytes against ``conn.expected``;
* parsed replies (HTTP, RESP without fixed replies, a ``Framed`` checker): the connection's
  :class:`~pytest_multiconn.exchanges.ReplyReader` frames and checks each reply, and says when
  they are all in, at EOF included (HalfClose);
* garbage (the ``Garbage`` fault with an exchange whose server does not echo it): the first
  thing the server does (close, an error reply, nothing for a while) is named and judged by
  the exchange's ``garbage_answers()`` (:mod:`pytest_multiconn.exchanges.garbage`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pytest_multiconn.core.seed import current_test_id
from pytest_multiconn.exchanges.base import ReplyReader
from pytest_multiconn.exchanges.garbage import QUIET, answer_problem, classify_answer
from pytest_multiconn.faults.api import ClientConnectionAPI
from pytest_multiconn.faults.client import FAULTY_TESTS, FaultSession, describe

if TYPE_CHECKING:
    from pytest_multiconn.core.loop import Timer

#: Send-size records kept per connection (enough to compare schedules, bounded for big runs).
MAX_RECORDED_SENDS = 4096


def _is_closed(conn: _DriverConnection) -> bool:
    return conn.closed


class _DriverClient(Protocol):
    @property
    def on_event(self) -> Callable[[str, int, bytes | None], None] | None: ...


class _DriverConnection(ClientConnectionAPI, Protocol):
    """What the driver needs of the client connection it runs (more than a fault may ask)."""

    @property
    def client(self) -> _DriverClient: ...

    conn_id: int
    label: str
    done: bool
    failure: str | None
    mismatch_at: int | None
    #: The replies are parsed by ``reader`` (not exact bytes).
    parsed: bool
    #: The payload is garbage judged by the exchange's garbage answers.
    garbage: bool
    reader: ReplyReader | None

    def close(self, exc: BaseException | None = None, reason: str = "") -> None: ...

    def reset(self) -> None: ...

    def linger(self) -> None: ...

    def complete(self) -> None:
        """The exchange is over: judge what came and close."""

    def expect(self, payload: bytes, *, garbage: bool = False) -> None: ...


class FaultDriver:
    """Runs the fault sessions of one client connection and decides when its exchange is done.

    The connection calls :meth:`after_send` from its ``Connection.after_send`` hook, which
    runs for plaintext above any layer, so the faults see the same sends in plaintext and over
    TLS; connections without faults pay nothing.
    """

    def __init__(self, conn: _DriverConnection, sessions: Sequence[FaultSession]) -> None:
        self.conn = conn
        self.sessions = list(sessions)
        self.lingers = any(s.lingers for s in sessions)
        self.reads = all(s.reads for s in sessions)
        self.wants_eof = any(s.wants_eof for s in sessions)
        self.sends_garbage = any(s.sends_garbage for s in sessions)
        self.quiet = min(
            (getattr(s.fault, "quiet", QUIET) for s in sessions if s.sends_garbage), default=QUIET
        )
        self.written = False
        self.all_sent_fired = False
        self.send_sizes: list[int] = []
        self.deliberate = ""
        self.peer_closed = False
        #: The server's answer to garbage ("close", "error", "nothing", "reply b'...'").
        self.answer: str | None = None
        self.answer_problem: str | None = None
        self._quiet_timer: Timer | None = None
        self._check_queued = False
        test = current_test_id()
        if test is not None:
            FAULTY_TESTS.add(test)

    def __repr__(self) -> str:
        return f"<FaultDriver {self.conn.label} {describe([s.fault for s in self.sessions])}>"

    @property
    def names(self) -> str:
        return "+".join(s.fault.name for s in self.sessions)

    def prepare(self) -> None:
        for s in self.sessions:
            s.prepare()

    def after_send(self, sent: int) -> None:
        """``sent`` plaintext bytes left in one send (the connection's ``after_send`` hook)."""
        if len(self.send_sizes) < MAX_RECORDED_SENDS:
            self.send_sizes.append(sent)
        for s in self.sessions:
            s.after_send(sent)
        if self.written and not self.all_sent_fired and not self._check_queued:
            # Not from inside the send: the caller still updates the buffer after we return.
            self._check_queued = True
            self.conn.loop.call_soon(self._check_all_sent)

    def _check_all_sent(self) -> None:
        self._check_queued = False
        conn = self.conn
        if self.all_sent_fired or conn.closed or conn.buffered:
            return
        self.all_sent_fired = True
        for s in self.sessions:
            s.all_sent()
            if _is_closed(conn):  # a hook may have closed it (mypy cannot see that)
                return
        if conn.garbage and self.answer is None:
            answers = conn.exchange.garbage_answers() or ()
            if "nothing" in answers:
                # Silence counts as an answer only after a while with all of it sent.
                self._quiet_timer = conn.loop.call_later(self.quiet, self._quiet)

    def _quiet(self) -> None:
        self._quiet_timer = None
        if not self.conn.closed:
            self.garbage_answered(None)

    def connection_made(self) -> None:
        conn = self.conn
        for s in self.sessions:
            s.connected()
            if conn.closed:
                return
        requests = b"".join(conn.messages)
        payload: bytes | None = requests
        for s in self.sessions:
            payload = s.payload(payload)
        # What comes back for the payload: exact bytes, parsed replies, or a garbage answer.
        conn.expect(payload or b"", garbage=self.sends_garbage and bool(payload))
        taken = False
        for s in self.sessions:
            if s.start_sending(requests):
                taken = True
                break
            if conn.closed:
                return
        if not taken and payload:
            observer = conn.client.on_event
            if observer is not None:
                observer("send", conn.conn_id, payload)
            conn.write(payload)
        for s in self.sessions:
            s.payload_written()
        self.written = True
        if not conn.closed and not conn.buffered:
            conn.loop.call_soon(self._check_all_sent)
        nothing_back = not conn.garbage and conn.replies_complete
        if not taken and nothing_back and not self.wants_eof and not conn.closed:
            self.exchange_done()

    def received(self, data: bytes) -> None:
        if self.conn.done:
            # A lingering connection should hear nothing more: note it (a server bug or a push).
            self.conn.fault_note(f"received {len(data)} B after the exchange")
        for s in self.sessions:
            s.received(data)

    def replies_done(self) -> None:
        """Every reply arrived (the full echo, or the reader framed them all)."""
        if not self.wants_eof:
            self.exchange_done()

    def reply_wrong(self) -> None:
        """A reply already differs from the expected bytes: the result is a failure whatever
        comes next, so the exchange ends now (a lingering fault still lingers) instead of
        waiting for the rest, or for the server's EOF, or for the timeout."""
        self.exchange_done()

    def garbage_answered(self, first: bytes | None) -> None:
        """The server's first answer to our garbage: bytes, ``b""`` (it closed or reset), or
        None (nothing for ``quiet`` s)."""
        conn = self.conn
        if self.answer is not None:
            return
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        self.answer = classify_answer(conn.exchange, first)
        self.answer_problem = answer_problem(conn.exchange, self.answer)
        conn.fault_note(f"the server answered garbage with {self.answer}")
        if conn.closed:
            return
        if first == b"":
            conn.close(reason="closed by the server after garbage")
        else:
            self.exchange_done()

    def lost(self, exc: BaseException | None) -> bool:
        """The connection was lost with ``exc``; True when that is the answer we waited for
        (a reset in answer to garbage counts as "close"), not a failure."""
        if self.conn.garbage and self.answer is None and exc is not None:
            self.garbage_answered(b"")
            return True
        return False

    def on_eof(self) -> None:
        conn = self.conn
        self.peer_closed = True
        if conn.done:
            conn.fault_note("closed by the server while lingering")
            conn.close(reason="closed by server")
            return
        if conn.garbage:
            self.garbage_answered(b"")
            return
        if conn.parsed and conn.reader is not None:
            self._parsed_eof(conn.reader)
            return
        if self.wants_eof and conn.received == len(conn.expected):
            conn.close(reason="full echo, then EOF")
            return
        if self.wants_eof:
            lost = len(conn.expected) - conn.received
            conn.failure = (
                f"bytes lost on half-close: the server closed after {self._replied()} "
                f"({lost} lost)"
            )
        elif not self.reads:
            conn.failure = f"server closed the connection after receiving {conn.bytes_out} B"
        else:
            conn.failure = f"server closed the connection after {self._replied()}"
        conn.close(reason="eof before the exchange ended")

    def _replied(self) -> str:
        # The exact-bytes path serves echo and every exchange whose replies are known bytes:
        # only an echo server "echoes".
        conn = self.conn
        if conn.exchange.name == "echo":
            return f"echoing {conn.received} of {len(conn.expected)} bytes"
        # The same words as the client's own message without faults (client/multiconn.py).
        return f"{conn.received} of the {len(conn.expected)} B of replies expected"

    def _parsed_eof(self, reader: ReplyReader) -> None:
        conn = self.conn
        reader.eof()  # some replies end at the close (HTTP/1.0 without a length)
        if conn.replies_complete:
            # Wrong replies, if any, are the result's problem; the exchange itself ended.
            conn.close(reason="every reply, then EOF" if self.wants_eof else "complete at EOF")
            return
        got, want = len(reader.outcomes), len(reader.requests)
        if self.wants_eof:
            conn.failure = (
                f"replies lost on half-close: the server closed after {got} of {want} replies"
            )
        elif not self.reads:
            conn.failure = f"server closed the connection after receiving {conn.bytes_out} B"
        else:
            conn.failure = f"server closed the connection after {got} of {want} replies"
        conn.close(reason="eof before the exchange ended")

    def exchange_done(self) -> None:
        conn = self.conn
        if conn.done:
            return
        if self.lingers:
            conn.linger()
        else:
            conn.complete()

    def end(self, note: str, *, reset: bool) -> None:
        self.deliberate = note
        self.conn.fault_note(note)
        if reset:
            self.conn.reset()
        else:
            self.conn.close(reason=note)

    def writing_paused(self) -> None:
        for s in self.sessions:
            s.writing_paused()

    def writing_resumed(self) -> None:
        for s in self.sessions:
            s.writing_resumed()

    def closed(self) -> None:
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        for s in self.sessions:
            s.closed()

    def timeout_failure(self, timeout: float) -> str | None:
        """What a timeout means for this connection, when the faults know better than the
        connection's generic message (None: they do not)."""
        conn = self.conn
        if conn.garbage and self.answer is None:
            answers = ", ".join(sorted(conn.exchange.garbage_answers() or ()))
            return (
                f"timed out after {timeout}s waiting for an answer to {conn.bytes_out} B of "
                f"garbage: the server neither closed nor answered (a {conn.exchange.name} "
                f"server may answer {answers})"
            )
        if self.wants_eof and conn.replies_complete:
            what = "every reply" if conn.parsed else "the full echo"
            return (
                f"timed out after {timeout}s: got {what} after our half-close, but the server "
                "never closed the connection"
            )
        return None

    def matched(self) -> bool:
        conn = self.conn
        if conn.mismatch_at is not None:
            return False
        if self.deliberate or not self.reads:
            return True
        if conn.garbage:
            return self.answer is not None and self.answer_problem is None
        if conn.parsed and conn.reader is not None:
            return conn.reader.ok
        return conn.received == len(conn.expected)

    def problem(self) -> str:
        """What went wrong with the replies, in words ("" when right, or not judged)."""
        conn = self.conn
        if self.deliberate or not self.reads:
            return ""
        if conn.garbage:
            return self.answer_problem or ""
        if conn.parsed and conn.reader is not None:
            return conn.reader.first_problem() or ""
        return ""
