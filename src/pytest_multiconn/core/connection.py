"""One non-blocking stream connection on a :class:`~pytest_multiconn.core.loop.Loop`.

The connection object is the selector's ``SelectorKey.data``.  Its rules, borrowed from asyncio's
``selector_events.py``:

* ``write()`` sends at once and buffers only what the kernel did not take;
* ``EVENT_WRITE`` is registered only while output is pending (asking for it always makes an
  idle loop spin at 100% CPU, which is what the tutorial's server does);
* when the output buffer grows past the high-water mark the connection's ``pause_writing()``
  hook runs (an echo connection then stops reading, so a peer that never reads cannot make
  us buffer without bound) and ``resume_writing()`` runs once it drains below the low-water mark;
* end-of-stream from the peer never loses data: pending output is flushed before we close.

Subclasses override the hooks ``connection_made``, ``data_received``, ``on_eof`` and
``connection_lost``, like an asyncio ``Protocol`` fused with its transport.

Extension points, the same in plaintext and under a layer (TLS):

* ``send_allowance()`` is how many plaintext bytes the next ``send`` may carry (default
  ``max_send``; 0: not now).  It is applied to plaintext *before* the layer, so a fault that
  chunks its output makes small TLS records exactly as it makes small TCP writes;
* ``after_send(n)`` runs after ``n`` plaintext bytes left (all their ciphertext, under TLS);
* ``layer``: a :class:`~pytest_multiconn.core.layer.StreamLayer` between the socket and the
  plaintext (set with ``use_layer()`` before the connection is attached or connects).  It
  decides the selector interest while it is not ready (a handshake), sends its own bytes
  first, and ends its stream before a half-close (``before_shutdown``) or a close.

No subclass needs to override ``_send`` or any other private method for those.

Its life is one explicit state, :class:`Phase` (as h11's ``_state.py`` keeps an HTTP
connection's): ``_NEXT`` lists every allowed transition and ``_enter`` refuses any other with
an internal error, so a path that asks "may I send now?" compares one phase instead of
re-deriving it from flags.  What stays beside the phase are independent toggles, not phases:
the peer's end of stream (the read direction's only event), and flow control (reading paused,
writing paused, output held), each of which can flip in any phase.
"""

from __future__ import annotations

import enum
import errno
import itertools
import socket
import struct
import time
import traceback

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.checks import check_count, check_seconds
from pytest_multiconn.core.layer import Buffer, StreamLayer
from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, Loop, Timer
from pytest_multiconn.core.transcript import DEFAULT_TRANSCRIPT_LIMIT, Transcript, TranscriptEntry

try:  # POSIX: how many bytes the kernel still holds in a socket's send queue (SIOCOUTQ)
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ  # the same request number on Linux
except (ImportError, AttributeError):  # pragma: no cover - Windows
    _SIOCOUTQ = None

__all__ = [
    "DEFAULT_TRANSCRIPT_LIMIT",
    "Buffer",
    "Connection",
    "Phase",
    "Transcript",
    "TranscriptEntry",
    "validate_water_marks",
]

DEFAULT_HIGH_WATER = 64 * 1024
DEFAULT_LOW_WATER = 16 * 1024
DEFAULT_READ_SIZE = 64 * 1024

_conn_ids = itertools.count(1)

#: Errors that end one connection (the peer went away) and never the loop.
_PEER_GONE = (ConnectionError, TimeoutError)
_PEER_GONE_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ECONNREFUSED,
    }
)


class Phase(enum.Enum):
    """Where a connection is in its life (our side of it; the peer's EOF is ``eof_received``)."""

    #: ``connect()`` is in progress: writes are buffered, nothing is sent.
    CONNECTING = "connecting"
    #: Both directions may flow (an accepted socket starts here).
    OPEN = "open"
    #: ``write_eof()``: our FIN goes once the buffered output is flushed; writes are dropped.
    EOF_PENDING = "eof-pending"
    #: ``finish()``: the connection closes once the buffered output is flushed.
    FINISHING = "finishing"
    #: Our FIN is sent (half-closed): we may still read, writes are dropped.
    EOF_SENT = "eof-sent"
    CLOSED = "closed"


_CONNECTING = Phase.CONNECTING
_OPEN = Phase.OPEN
_EOF_PENDING = Phase.EOF_PENDING
_FINISHING = Phase.FINISHING
_EOF_SENT = Phase.EOF_SENT
_CLOSED = Phase.CLOSED

#: Every allowed transition.  ``connect()`` takes a new connection from OPEN to CONNECTING; a
#: ``write_eof()`` or ``finish()`` during a connect is kept in ``_after_connect``, the phase the
#: connect completes into.  ``end_output()`` (a fault's cut) may come in any live phase.
_NEXT: dict[Phase, frozenset[Phase]] = {
    _CONNECTING: frozenset({_OPEN, _EOF_PENDING, _FINISHING, _EOF_SENT, _CLOSED}),
    _OPEN: frozenset({_CONNECTING, _EOF_PENDING, _FINISHING, _EOF_SENT, _CLOSED}),
    _EOF_PENDING: frozenset({_FINISHING, _EOF_SENT, _CLOSED}),
    _FINISHING: frozenset({_OPEN, _EOF_SENT, _CLOSED}),  # OPEN: cancel_finish()
    _EOF_SENT: frozenset({_FINISHING, _CLOSED}),
    _CLOSED: frozenset(),
}


def validate_water_marks(high: int, low: int | None) -> tuple[int, int]:
    """Check a high/low water mark pair; ``low`` defaults to a quarter of ``high``."""
    high = check_count(high, "high_water", minimum=1)
    low = high // 4 if low is None else check_count(low, "low_water")
    if low > high:
        raise ValueError(f"low_water ({low}) must not exceed high_water ({high})")
    return high, low


class Connection:
    """A non-blocking socket with buffered output, flow control and a transcript."""

    # Slots, for memory: with more than 30 attributes CPython 3.11 gives up on key-sharing
    # instance dicts, and each connection then carried a 1.6 KB dict (10,000 idle connections
    # cost 2.9 KB each; with slots about 1.5 KB).  ``__dict__`` stays, so subclasses (echo,
    # faults, proxy, client) add attributes and class-level defaults as before.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_after_connect",
        "_eof_received",
        "_idle_mark",
        "_idle_queued",
        "_idle_sampled",
        "_idle_timeout",
        "_idle_timer",
        "_mask",
        "_out",
        "_output_held",
        "_phase",
        "_reading_paused",
        "_writing_paused",
        "bytes_in",
        "bytes_out",
        "close_reason",
        "closed",
        "error",
        "fd",
        "high_water",
        "id",
        "label",
        "last_received",
        "last_sent",
        "layer",
        "loop",
        "low_water",
        "max_send",
        "opened_at",
        "peak_buffered",
        "peer",
        "sock",
        "transcript",
    )

    #: Read size per ``recv`` call.
    read_size = DEFAULT_READ_SIZE

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        peer: SocketAddress | None = None,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int | None = None,
        transcript_limit: int = DEFAULT_TRANSCRIPT_LIMIT,
        label: str = "",
    ) -> None:
        self.high_water, self.low_water = validate_water_marks(high_water, low_water)
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        sock.setblocking(False)
        self.peer = peer
        self.id = next(_conn_ids)
        self.label = label or f"conn-{self.id}"
        self.opened_at = time.monotonic()
        self.last_received = self.opened_at
        #: When the peer last took bytes from us (idle means neither side made progress).
        self.last_sent = self.opened_at
        self.transcript = Transcript(transcript_limit, self.opened_at)
        self.bytes_in = 0
        self.bytes_out = 0
        self.peak_buffered = 0
        self.close_reason = ""
        self.error: BaseException | None = None
        #: Cap on bytes handed to one ``send`` call (a fault knob: forces short writes).
        self.max_send: int | None = None
        #: The byte layer between the socket and our plaintext (None: plaintext on the wire).
        self.layer: StreamLayer | None = None
        self._out = bytearray()
        self._mask = 0
        self._phase = _OPEN
        #: ``phase is Phase.CLOSED``, kept by ``_enter`` (its one writer; never set it): a
        #: plain attribute because every write of the general path reads it, and a property
        #: there cost about 600 instructions per echoed message on 3.11 (callgrind, as
        #: benchmarks/instructions.py counts, with ProtocolServer(EchoProtocol)).
        self.closed = False
        self._after_connect = _OPEN  # the phase a connect in progress completes into
        # Independent toggles beside the phase: flow control, and the peer's end of stream.
        self._reading_paused = False
        self._output_held = False
        self._writing_paused = False
        self._eof_received = False
        self._idle_timeout: float | None = None
        self._idle_timer: Timer | None = None
        self._idle_queued = 0  # the kernel's send queue when it last changed, and when that was
        self._idle_sampled = self.opened_at
        # The last send or read when that sample was taken: a later one makes it stale.
        self._idle_mark = self.opened_at

    # -- diagnostics ------------------------------------------------------------------------
    def __repr__(self) -> str:
        phase = self._phase
        if phase is _CLOSED:
            state = f"closed ({self.close_reason})" if self.close_reason else "closed"
        elif phase is _CONNECTING:
            state = "connecting"
        else:
            state = phase.value
            if self._reading_paused:
                state += " read-paused"
            if self._eof_received:
                state += " eof-received"
            if self._output_held:
                state += " output-held"
        if self.layer is not None:
            state += f" {self.layer!r}"
        return (
            f"<{type(self).__name__} {self.label} fd={self.fd} peer={self.peer!r} {state} "
            f"in={self.bytes_in} out={self.bytes_out} buffered={len(self._out)}>"
        )

    # -- the state ------------------------------------------------------------------------------
    def _enter(self, phase: Phase) -> None:
        """Move to ``phase``; anything ``_NEXT`` does not list is a bug in this module."""
        if phase not in _NEXT[self._phase]:
            raise RuntimeError(
                f"internal error: {self!r} cannot go from {self._phase.value} to {phase.value}"
            )
        self._phase = phase
        self.closed = phase is _CLOSED

    @property
    def phase(self) -> Phase:
        """Where the connection is in its life (see :class:`Phase`)."""
        return self._phase

    @property
    def accepts_writes(self) -> bool:
        """``write()`` would take bytes (False once closed or once our EOF is on its way)."""
        phase = self._phase
        if phase is _CONNECTING:
            return self._after_connect is not _EOF_PENDING
        return phase is _OPEN or phase is _FINISHING

    @property
    def writing_paused(self) -> bool:
        """``pause_writing()`` ran and ``resume_writing()`` has not yet (the high-water mark)."""
        return self._writing_paused

    @property
    def buffered(self) -> int:
        """Bytes written by us and not yet taken by the kernel."""
        return len(self._out)

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    @property
    def eof_received(self) -> bool:
        return self._eof_received

    @property
    def output_held(self) -> bool:
        return self._output_held

    @property
    def half_close_safe(self) -> bool:
        """False when a half-close may lose what the peer still sends (TLS: see tls.stream)."""
        return self.layer is None or self.layer.half_close_safe

    # -- seams for the proxy --------------------------------------------------------------------
    # What proxy/side.py, pair.py and splice.py read and call, so they touch no private state:
    # read-only views of the connection's phase, and the two calls the zero-copy relay makes
    # when it moves bytes past this connection's recv/send.  Keep them working on whatever
    # represents the state underneath.
    @property
    def connecting(self) -> bool:
        """A ``connect()`` is in progress (nothing can be sent yet)."""
        return self._phase is _CONNECTING

    @property
    def eof_pending(self) -> bool:
        """``write_eof()`` was called and waits for the output to flush."""
        phase = self._phase
        return phase is _EOF_PENDING or (
            phase is _CONNECTING and self._after_connect is _EOF_PENDING
        )

    @property
    def eof_sent(self) -> bool:
        """Our write side is shut down (the FIN has gone)."""
        return self._phase is _EOF_SENT

    @property
    def finish_pending(self) -> bool:
        """``finish()`` was called and waits for the output to flush before closing."""
        phase = self._phase
        return phase is _FINISHING or (phase is _CONNECTING and self._after_connect is _FINISHING)

    @property
    def wants_write(self) -> bool:
        """The selector is asked to report this socket writable."""
        return bool(self._mask & EVENT_WRITE)

    def peer_failed(self, exc: OSError) -> None:
        """A send or receive made outside ``Connection`` (splice) failed with ``exc``: close
        as a failed ``recv``/``send`` would (a peer error is recorded, others re-raised)."""
        self._peer_failed(exc)

    def flush_output(self) -> None:
        """Act as on a writable event: send what is buffered, then close if ``finish()``
        waits, or shut the write side if ``write_eof()`` waits, and re-derive the interest."""
        self._on_writable()

    # -- hooks ------------------------------------------------------------------------------
    def connection_made(self) -> None:
        """Called once the socket is connected (at once for accepted sockets)."""

    def data_received(self, data: bytes) -> None:
        """Called with each chunk read from the peer."""

    def on_eof(self) -> None:
        """Called when the peer shut down its write side; the default closes once flushed."""
        self.finish()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Called once, after the socket is closed; ``exc`` is None for a clean close."""

    def pause_writing(self) -> None:
        """Called when the output buffer goes over the high-water mark."""

    def resume_writing(self) -> None:
        """Called when the output buffer drains under the low-water mark."""

    def send_allowance(self) -> int | None:
        """The most plaintext bytes the next send may carry: ``None`` for no limit, 0 for
        "not now" (the bytes stay buffered).  Default: ``max_send``.  Applied above the
        layer, so under TLS each allowance becomes one record of its own."""
        return self.max_send

    def after_send(self, sent: int) -> None:
        """``sent`` plaintext bytes just left (under a layer: all of their encoding)."""

    # -- set-up -----------------------------------------------------------------------------
    def use_layer(self, layer: StreamLayer) -> None:
        """Put ``layer`` between the socket and this connection (before attach/connect)."""
        if self._mask or self._phase is not _OPEN:
            raise RuntimeError(f"{self!r}: a layer must be set before the connection starts")
        self.layer = layer

    def attach(self) -> None:
        """Register with the loop and run ``connection_made`` (loop thread)."""
        self.transcript.record("connect", note=f"peer {self.peer!r}")
        self._update_interest()
        self._tcp_up()

    def _tcp_up(self) -> None:
        if self.layer is not None:
            self.layer.start()  # it calls layer_ready() once plaintext can flow
        else:
            self.connection_made()

    def layer_ready(self) -> None:
        """Called by the layer once it is open (a handshake is done): ``connection_made``."""
        self.connection_made()
        if not self.closed:
            self._update_interest()

    def connect(self, address: SocketAddress) -> None:
        """Start a non-blocking connect; ``connection_made`` runs when it completes."""
        if self._mask:
            raise RuntimeError(f"{self!r}: connect() on a connection that already started")
        self._enter(_CONNECTING)
        err = self.sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self.close(
                OSError(err, f"connect to {address!r} failed: {errno.errorcode.get(err, err)}")
            )
            return
        self._update_interest()

    def set_idle_timeout(self, seconds: float | None) -> None:
        """Close the connection once neither side made progress for ``seconds``.

        Progress is the peer sending us bytes *or* taking bytes we send: a slow reader that
        drains our output keeps the connection alive even while we paused reading from it
        (an echo connection does at its high-water mark), so our own pause never counts as
        the peer's silence.
        """
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if seconds is not None:
            seconds = check_seconds(seconds, "idle_timeout")
        self._idle_timeout = seconds
        if seconds is not None and not self.closed:
            self._idle_timer = self.loop.call_at(self._last_progress() + seconds, self._check_idle)

    def _last_progress(self) -> float:
        return max(self.last_received, self.last_sent)

    def _kernel_queued(self) -> int:
        """Bytes our kernel still holds for the peer (SIOCOUTQ); 0 where it cannot say."""
        if _SIOCOUTQ is None or self.closed:
            return 0
        try:
            queued: int = struct.unpack("i", fcntl.ioctl(self.fd, _SIOCOUTQ, b"\0\0\0\0"))[0]
            return queued
        except OSError:
            return 0

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closed or self._idle_timeout is None:
            return
        now = time.monotonic()
        due = self._last_progress() + self._idle_timeout
        if now >= due:
            # Why the kernel's queue too: once all of our output is in the kernel's send
            # buffer (megabytes, autotuned on loopback) a slow reader drains it for seconds
            # without our loop seeing a single event, while we have paused reading from it.
            # A queue that changed since the last check is the peer taking our bytes.  So a
            # connection whose only progress is the kernel draining closes between one and
            # two idle_timeouts after that progress stopped.
            # A sample taken before our last send or read is no baseline: the queue has been
            # drained and refilled since, and a capped buffer refills to the same level, so an
            # equal number then means nothing.  Such a sample is only replaced, as a change is.
            queued = self._kernel_queued()
            stale = self._idle_mark < max(self.last_received, self.last_sent)
            if queued and (stale or queued != self._idle_queued):
                self._idle_queued, self._idle_sampled = queued, now
                self.last_sent = self._idle_mark = now
                self._idle_timer = self.loop.call_at(now + self._idle_timeout, self._check_idle)
                return
            if queued and now - self._idle_sampled < self._idle_timeout:
                # The same queue as a sample taken less than idle_timeout ago: too soon to
                # tell a stalled peer from a slow one; look again a full timeout after it.
                self._idle_timer = self.loop.call_at(
                    self._idle_sampled + self._idle_timeout, self._check_idle
                )
                return
            self.transcript.record("note", note=f"idle for {self._idle_timeout}s")
            self.close(reason="idle timeout")
        else:
            # Progress since the timer was set: sleep again until the new deadline rather
            # than rescheduling a timer on every recv.
            self._idle_timer = self.loop.call_at(due, self._check_idle)

    # -- flow control -------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self._update_interest()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._update_interest()
            if self.layer is not None:
                self.layer.resumed()

    def hold_output(self) -> None:
        """Buffer every write until ``release_output()`` (used by faults and step mode)."""
        self._output_held = True
        self._update_interest()

    def release_output(self) -> None:
        self._output_held = False
        self._update_interest()

    def _update_interest(self) -> None:
        phase = self._phase
        if phase is _CLOSED:
            return
        mask = 0
        layer = self.layer
        if phase is _CONNECTING:
            mask = EVENT_WRITE
        elif layer is not None and not layer.ready:
            mask = layer.interest()
        else:
            if not self._reading_paused and not self._eof_received:
                mask |= EVENT_READ
            if (
                self._out or phase is _EOF_PENDING or (layer is not None and layer.backlog())
            ) and not self._output_held:
                mask |= EVENT_WRITE
        self._set_interest(mask)

    def update_interest(self) -> None:
        """Re-derive the selector interest (a layer calls it when its wants change)."""
        self._update_interest()

    def _set_interest(self, mask: int) -> None:
        """Register, modify or unregister with the loop so the selector asks for ``mask``."""
        if mask == self._mask:
            return
        if mask == 0:
            self.loop.unregister(self.sock)
        elif self._mask == 0:
            self.loop.register(self.sock, mask, self)
        else:
            self.loop.modify(self.sock, mask, self)
        self._mask = mask

    # -- I/O ----------------------------------------------------------------------------------
    def handle_event(self, mask: int) -> None:
        if self._phase is _CONNECTING:
            self._finish_connect()
            return
        layer = self.layer
        if layer is not None and not layer.ready:
            layer.handle_event(mask)
            return
        if mask & EVENT_READ:
            self._on_readable()
        if mask & EVENT_WRITE and self._phase is not _CLOSED:
            self._on_writable()

    def _finish_connect(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            exc = OSError(err, f"connect failed: {errno.errorcode.get(err, err)} ({self.peer!r})")
            if err == errno.ECONNREFUSED:
                exc = ConnectionRefusedError(err, f"connection refused by {self.peer!r}")
            self.close(exc)
            return
        self._enter(self._after_connect)
        self.transcript.record("connect", note=f"to {self.peer!r}")
        self._update_interest()
        self._tcp_up()
        if self._out and self._phase is not _CLOSED:
            self._update_interest()

    def _recv(self) -> bytes:
        """Raw read from the socket (no layer); tests inject errors here."""
        return self.sock.recv(self.read_size)

    def _send(self, data: Buffer) -> int:
        """The one place plaintext leaves: the allowance, then the layer or the socket."""
        limit = self.send_allowance()
        layer = self.layer
        if limit is not None and limit < len(data):
            if limit <= 0:
                raise BlockingIOError  # "not now" (a fault's cut): the bytes stay buffered
            with memoryview(data) as view, view[:limit] as part:
                sent = self.sock.send(part) if layer is None else layer.send(part)
        else:
            sent = self.sock.send(data) if layer is None else layer.send(data)
        if sent:
            self.after_send(sent)
        return sent

    def _on_readable(self) -> None:
        layer = self.layer
        try:
            if layer is not None:
                layer.readable()  # it calls deliver() / deliver_eof()
                return
            data = self._recv()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._peer_failed(exc)
            return
        if data:
            self.deliver(data)
        else:
            self.deliver_eof()

    def deliver(self, data: bytes) -> None:
        """Plaintext from the peer (from the socket, or a layer): count it, ``data_received``."""
        size = len(data)
        self.bytes_in += size
        self.last_received = now = time.monotonic()
        self.transcript.record("in", size, "", now)
        self.data_received(data)

    def deliver_eof(self) -> None:
        """The peer's end of stream (from the socket, or a layer): ``on_eof``."""
        self._eof_received = True
        self.transcript.record("eof-in")
        self._update_interest()
        self.on_eof()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` now if the kernel takes it, buffer the rest."""
        phase = self._phase
        if (phase is not _OPEN and not self.accepts_writes) or not data:
            return
        if not self._out and phase is not _CONNECTING and not self._output_held:
            try:
                sent = self._send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._peer_failed(exc)
                return
            if sent:
                self.bytes_out += sent
                self.last_sent = now = time.monotonic()
                self.transcript.record("out", sent, "", now)
                if sent == len(data):
                    return
                data = memoryview(data)[sent:]
        self._out += data
        buffered = len(self._out)
        self.peak_buffered = max(self.peak_buffered, buffered)
        self._update_interest()
        if buffered > self.high_water and not self._writing_paused:
            self._writing_paused = True
            self.pause_writing()

    def _on_writable(self) -> None:
        out = self._out
        layer = self.layer
        if layer is not None and not out and not self._output_held and layer.backlog():
            # The layer's own bytes with no plaintext behind them (a handshake message, a
            # session ticket).
            try:
                if not layer.flush():
                    return
            except OSError as exc:
                self._peer_failed(exc)
                return
        if out and not self._output_held:
            try:
                sent = self._send(out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._peer_failed(exc)
                return
            del out[:sent]
            self.bytes_out += sent
            self.last_sent = now = time.monotonic()
            self.transcript.record("out", sent, "", now)
            if self._writing_paused and len(out) <= self.low_water:
                self._writing_paused = False
                self.resume_writing()
                if self._phase is _CLOSED:
                    return
        if not out:
            phase = self._phase
            if phase is _FINISHING:
                self.close(reason="finished")
                return
            if phase is _EOF_PENDING:
                self._shutdown_write()
        self._update_interest()

    def write_eof(self) -> None:
        """Half-close: shut down our write side once pending output is flushed.

        After ``finish()`` it does nothing: the close that comes after the flush ends our
        output anyway."""
        phase = self._phase
        if phase is _CONNECTING:
            if self._after_connect is _OPEN:
                self._after_connect = _EOF_PENDING
            return  # the connect's EVENT_WRITE is registered already
        if phase is _OPEN:
            self._enter(_EOF_PENDING)
        elif phase is not _EOF_PENDING:
            return  # closed, our EOF sent, or closing after the flush
        if not self._out and not self._output_held:
            self._shutdown_write()
        self._update_interest()

    def end_output(self) -> None:
        """Drop the output not sent yet and shut down our write side now (a fault's cut,
        which closes the connection next).

        Under a layer its end of stream goes first (TLS: ``close_notify``), then the FIN.
        """
        phase = self._phase
        if phase is _CLOSED or phase is _EOF_SENT:
            return
        self._out.clear()
        self._send_eof()  # an error: the peer is gone already; the caller closes anyway

    def _shutdown_write(self) -> None:
        exc = self._send_eof()
        if exc is not None:
            self._peer_failed(exc)
        elif self._eof_received:
            self.close(reason="both sides closed")

    def _send_eof(self) -> OSError | None:
        """Shut down our write side (a layer's end of stream first); the error if it failed."""
        self._enter(_EOF_SENT)
        if self.layer is not None:
            self.layer.before_shutdown()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            return exc
        self.transcript.record("eof-out")
        return None

    def finish(self) -> None:
        """Close gracefully: flush pending output first, then close."""
        phase = self._phase
        if phase is _CLOSED:
            return
        if not self._out:
            self.close(reason="finished")
            return
        self.defer_finish()

    def defer_finish(self) -> None:
        """``finish()`` even with nothing buffered here, for a subclass whose output waits
        elsewhere (the proxy's kernel pipe): FINISHING, and the next flush closes."""
        phase = self._phase
        if phase is _CLOSED:
            return
        if phase is _CONNECTING:
            self._after_connect = _FINISHING
        elif phase is not _FINISHING:
            self._enter(_FINISHING)
        self._update_interest()

    def cancel_finish(self) -> None:
        """Undo a ``finish()`` whose flush is still under way: the connection stays open (a
        fault that cuts the connection its own way must not be pre-empted by that close)."""
        if self._phase is _FINISHING:
            self._enter(_OPEN)
        elif self._phase is _CONNECTING and self._after_connect is _FINISHING:
            self._after_connect = _OPEN

    def _peer_failed(self, exc: OSError) -> None:
        if self.layer is not None and self.layer.failed(exc):
            return
        if isinstance(exc, _PEER_GONE) or exc.errno in _PEER_GONE_ERRNOS:
            self.transcript.record("reset", note=f"{type(exc).__name__}: {exc.strerror or exc}")
            self.close(exc, reason=f"peer error: {type(exc).__name__}")
            return
        raise exc

    def reset(self) -> None:
        """Close with an RST instead of a FIN (``SO_LINGER`` with a zero timeout)."""
        if self.closed:
            return
        try:  # noqa: SIM105 - try/except is cheaper than contextlib.suppress, and reads as well
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # a socket the peer already reset cannot take options; it closes anyway
        self.transcript.record("reset", note="sent RST")
        self._close(None, "reset by us", clean=False)

    def close(self, exc: BaseException | None = None, reason: str = "") -> None:
        """Close now, dropping pending output.

        Closing a TCP socket that still has unread bytes in its receive buffer makes Linux
        send an RST instead of a FIN (RFC 2525, 2.17), and the peer may then lose data that we
        already sent but it had not yet read.  So ``close()`` is for teardown and errors; a
        graceful end goes through ``finish()`` after the peer's EOF, when nothing is unread.
        """
        self._close(exc, reason, clean=exc is None)

    def _close(self, exc: BaseException | None, reason: str, *, clean: bool) -> None:
        if self._phase is _CLOSED:
            return
        if self.layer is not None:
            self.layer.before_close(clean)  # TLS: close_notify on a clean close
        self._enter(_CLOSED)
        if exc is not None and exc.__traceback__ is not None:
            # The error stays on the closed connection (and a closed connection stays
            # referenced a while: a server's recently-closed list, a client's results); its
            # traceback's frames would keep their locals, such as the 256 KiB of ciphertext a
            # TLS send() was handing to a peer that reset.  The traceback still formats.
            traceback.clear_frames(exc.__traceback__)
        self.error = exc
        self.close_reason = reason or (f"{type(exc).__name__}: {exc}" if exc else "closed")
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._out.clear()
        self.transcript.record("close", note=self.close_reason)
        if self._mask:
            try:  # noqa: SIM105 - close() is on the hot path of short connections
                self.loop.forget(self.sock)  # the close right below leaves the epoll set
            except (KeyError, ValueError, OSError):
                pass  # the loop's selector is already closed
            self._mask = 0
        self.sock.close()
        self.connection_lost(exc)
