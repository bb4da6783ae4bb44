"""The TLS layer: TLS between a connection's plaintext and its socket, over memory BIOs.

:class:`TLSLayer` implements core's :class:`~pytest_multiconn.core.layer.StreamLayer`: any
:class:`~pytest_multiconn.core.connection.Connection` (echo, faulty echo, client) gets one with
``conn.use_layer(...)`` (servers and clients do it through ``ServerTLS`` / ``ClientTLS``), and
no connection class is combined with anything at run time.  Everything above the layer, faults
included, is the same code in plaintext and over TLS.

Why ``MemoryBIO`` and not ``wrap_socket``
-----------------------------------------
Each TLS connection is an ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` buffers
(``context.wrap_bio``), and the raw, non-blocking socket moves ciphertext in bulk: one
``recv(512 KiB)`` into the incoming BIO, then ``SSLObject.read()`` until it wants more; and
``SSLObject.write()`` of the plaintext, the outgoing BIO's ciphertext handed to ``send()`` at
once, the rest kept for ``EVENT_WRITE``.  The layer only moves bytes: ``Connection``
keeps counting plaintext and its water marks, and ``finish()``, ``write_eof()`` and the fault
hooks work unchanged.

The reason is system calls (measured with benchmarks/tls.py and ``strace -c``, OpenSSL 3.0).
A socket wrapped with ``wrap_socket`` lets OpenSSL make them, and without ``read_ahead``
(which Python's ``ssl`` cannot switch on) it reads every record with two ``read()`` calls, its
5-byte header and then its body, and writes every record with its own ``write()``: about 230
system calls per MB echoed.  Over memory BIOs a 16 MiB echo takes about 7 ``recv``/``send``
calls per MB on each side (``strace -c``), in the range of asyncio's ``SSLProtocol`` (about 17;
it reads 256 KiB at a time).  The copy through the BIOs costs far less than the system calls it
saves: in a profile of the echo benchmark, ``SSLObject.read``/``write`` (the crypto) and the
socket calls take almost all of the loop's busy time.

How the fault knobs act on ciphertext and plaintext:

* the connection's ``send_allowance()`` (``max_send``, a client fault's chunk size) caps the
  **plaintext** handed to :meth:`TLSLayer.send`; with a cap, that is one record, handed to the
  kernel in a ``send()`` of its own, so ``max_send=1`` makes one TLS
  record per byte (a short record the peer's reads see alone: see below).  ``send`` returns
  the plaintext
  whose ciphertext the kernel took; ciphertext it did not take stands for the plaintext still
  at the front of ``Connection``'s buffer, and is sent first on the next writable event.  So
  the buffer, the high/low water marks and ``buffered`` count plaintext not yet on the wire:
  the ciphertext backlog give or take the 22 bytes per record, and a peer that never reads
  still makes an echo connection stop reading.
* ``hold_output()`` holds plaintext and ciphertext alike; ``read_size`` below 16 KiB (a slow
  reader) makes the raw ``recv()`` that small too, as in plaintext.

Three rules shape the read side:

* **One record per SSL_read.**  ``SSLObject.read()`` returns at most one record.  Full 16 KiB
  records are joined into one ``data_received()`` of up to 256 KiB (one echo write per batch,
  not per record; a 256 KiB client window and its record overhead fit one raw read); a short
  record ends a batch, so records a fault made small arrive one per
  ``data_received()``, where a test can see their boundaries.
* **Records the selector cannot see.**  One raw read can bring many records.  After a read
  the connection keeps decrypting what the incoming BIO holds, batch after batch, while it is
  reading; what is left when it pauses (back-pressure, a slow reader) is drained by a
  ``call_soon`` when reading resumes, and so is application data that came with the end of the
  handshake, or an error or ``close_notify`` met behind data (delivered on the next read).
* **No safe half-close.**  TLS 1.3 allows one (``close_notify`` ends only the sender's
  direction), but CPython's ``unwrap()`` calls ``SSL_shutdown`` twice, and the second call
  reads: records the peer sent before our ``close_notify`` reached it that are already in the
  incoming BIO can be consumed and rejected ("application data after close notify").  A bare
  TCP FIN under TLS is no better: OpenSSL 3 treats an EOF without ``close_notify`` as fatal
  ("unexpected eof while reading") and answers with an alert.  So ``write_eof()`` over TLS
  flushes, sends ``close_notify`` and a FIN, and keeps reading what comes after; it is reliable
  only once the peer has nothing more in flight, which is when the
  :class:`~pytest_multiconn.HalfClose` fault uses it over TLS (after the full echo, then it
  expects the server to close).  An EOF without ``close_notify`` is still an EOF to the echo
  server (it is counted in ``tls_ragged_eofs``).

The handshake pumps the same BIOs: raw bytes in, ``do_handshake()``, whatever OpenSSL wrote
(a flight, or the alert of a failed handshake) out.  ``close()`` sends ``close_notify``
(``unwrap()`` writes it to the outgoing BIO, behind the rest of any record the kernel took part
of) in one ``send()`` on a clean close, never after a reset or an error.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from pytest_multiconn.core.layer import Buffer, LayerHost
from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, Timer
from pytest_multiconn.errors import TLSError

__all__ = ["HANDSHAKE_TIMEOUT_REASON", "TLSLayer"]

#: The close reason of a connection whose handshake did not finish in time.
HANDSHAKE_TIMEOUT_REASON = "TLS handshake timeout"

_NEW, _HANDSHAKING, _OPEN, _STALLED = "new", "handshaking", "open", "stalled"

#: The most plaintext one TLS record carries (RFC 8446, 5.1): SSL_read's most per call.
_MAX_RECORD = 16384

#: Ciphertext asked of the kernel per ``recv()`` in bulk: room for a full 256 KiB batch and
#: its record overhead (22 B per record in TLS 1.3), and more behind it.
_RAW_READ = 512 * 1024

#: Plaintext per ``data_received()`` in bulk (a plaintext echo connection's 64 KiB read size
#: would mean four echo writes where one does).
_PLAIN_BATCH = 256 * 1024

#: Ciphertext per ``recv()`` during the handshake: a flight is a few KiB (a client
#: certificate chain included); whatever comes behind it waits in the BIO, drained once open.
_HANDSHAKE_READ = 64 * 1024

#: Plaintext per ``SSLObject.write()`` when no send allowance caps it: bounds the
#: ciphertext made ahead of the kernel's readiness.
_WRITE_CHUNK = 256 * 1024

#: Batches one readiness event may deliver before it yields to the loop (small records, each
#: delivered alone, can be thousands in one raw read).
_MAX_BATCHES = 1024


class TLSLayer:
    """TLS over memory BIOs under one connection (see the module essay); loop thread only.

    ``conn`` is the connection above (what it may be asked: core's ``LayerHost``); the
    connection's ``connection_made()`` runs once the handshake is done, not when TCP connects.
    ``counts`` (a server's Counter: "handshakes", "failures", "ragged_eofs", "timeouts") and
    ``notify`` (wakes the server's waiters) are optional.
    """

    #: A TLS half-close is not safe to rely on (see the module essay): HalfClose waits for the
    #: full echo before it calls write_eof().
    half_close_safe = False

    def __init__(
        self,
        conn: LayerHost,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float,
        counts: Counter[str] | None = None,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.conn = conn
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        #: None once closed (``_release``).
        self._obj: ssl.SSLObject | None = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        # SSLObject's methods are thin Python wrappers: one frame per record-sized call is a
        # measurable share of an echo server's time, so the hot path calls the C object.
        self._c: Any = self._obj._sslobj  # type: ignore[attr-defined]  # see above
        self._handshake_timeout = handshake_timeout
        self._counts = counts
        self.notify = notify
        self._state = _NEW
        self._want = EVENT_READ
        self._timer: Timer | None = None
        #: Ciphertext the kernel has not taken yet (it goes out before anything else).
        self._cout: bytes | memoryview = b""
        #: How many plaintext bytes at the front of the connection's buffer ``_cout`` carries.
        self._cout_plain = 0
        #: One raw recv() per readiness event: batches after it use what is already buffered.
        self._raw_ok = False
        #: False when the last batch ended because the incoming BIO ran dry.
        self._more = False
        self._drain_queued = False
        #: An error (or the end of the stream) that a batched read met behind data.
        self._read_error: OSError | None = None
        self._stalled_at = 0.0
        self._on_stalled_close: Callable[[str], None] | None = None
        self._notify_sent = False
        #: False until the handshake is done (the StreamLayer protocol).
        self.ready = False
        #: A fault's hook that replaces the handshake (StallHandshake).
        self.before_handshake: Callable[[TLSLayer], None] | None = None
        #: Send ``close_notify`` when closing (a fault turns it off).
        self.close_notify = True
        #: Why TLS failed on this connection ("" while it has not).
        self.failure = ""
        #: True when the peer closed TCP without sending ``close_notify`` first.
        self.ragged_eof = False
        #: The negotiated protocol ("TLSv1.3"), once the handshake is done.
        self.version: str | None = None

    def __repr__(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"tls={self._state}{version}"

    @property
    def established(self) -> bool:
        return self._state == _OPEN

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The connection's ``ssl.SSLObject`` (context, server_hostname, version, cipher...)."""
        obj = self._obj
        if obj is None:
            raise TLSError(
                f"{self.conn!r}: the connection is closed and its SSL object was let go "
                "(it held OpenSSL's buffers); read what you need before it closes"
            )
        return obj

    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified certificate (``SSLObject.getpeercert()``), or None."""
        if self.conn.closed or self._state != _OPEN or self._obj is None:
            return None
        return self._obj.getpeercert()

    # -- counters ---------------------------------------------------------------------------
    def _count(self, what: str) -> None:
        if self._counts is not None:
            self._counts[what] += 1
        if self.notify is not None:
            self.notify()

    # -- ciphertext out -----------------------------------------------------------------------
    def _flush_cout(self) -> bool:
        """Hand the ciphertext backlog to the kernel; True when none is left."""
        cout = self._cout
        try:
            sent = self.conn.sock.send(cout)
        except (BlockingIOError, InterruptedError):
            return False
        if sent == len(cout):
            self._cout = b""
            return True
        self._cout = memoryview(cout)[sent:]
        return False

    def _push(self) -> None:
        """Send what OpenSSL wrote outside ``send`` (handshake, tickets, alerts), in order."""
        data = self._out.read()
        if not data:
            return
        if self._cout:
            self._cout = bytes(self._cout) + data  # rare: behind a pending record
            return
        try:
            sent = self.conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            self._cout = memoryview(data)[sent:]
            self.conn.update_interest()

    def backlog(self) -> bool:
        return bool(self._cout)

    def flush(self) -> bool:
        # Called with no plaintext behind the backlog: once it is out, it carried none.
        if not self._flush_cout():
            return False
        self._cout_plain = 0
        return True

    # -- handshake --------------------------------------------------------------------------
    def start(self) -> None:
        # TCP is up (accepted, or our connect finished); TLS is not.  The connection's
        # connection_made() runs from _handshake once the handshake is done.
        self._state = _HANDSHAKING
        # The timer holds a weak reference: a cancelled timer stays in the loop's heap until
        # it is due, and must not keep this layer (and its SSL object) alive that long.
        self._timer = self.conn.loop.call_later(
            self._handshake_timeout, _handshake_timer_fired, weakref.WeakMethod(self._timed_out)
        )
        if self.before_handshake is not None:
            self.before_handshake(self)
            return
        self._handshake()

    def interest(self) -> int:
        return self._want

    def handle_event(self, mask: int) -> None:
        if self._state == _HANDSHAKING:
            self._handshake_event(mask)
        elif self._state == _STALLED:
            self._stalled_read()

    def _handshake_event(self, mask: int) -> None:
        try:
            if mask & EVENT_WRITE and self._cout:
                self._flush_cout()
            if mask & EVENT_READ:
                try:
                    data = self.conn.sock.recv(_HANDSHAKE_READ)
                except (BlockingIOError, InterruptedError):
                    pass
                else:
                    if data:
                        self._in.write(data)
                    else:
                        self._in.write_eof()  # do_handshake reports the EOF
        except OSError as exc:
            self._fail(f"TLS handshake failed: {_handshake_error(exc)}", exc)
            return
        self._handshake()

    def _handshake(self) -> None:
        done = False
        try:
            self._c.do_handshake()
            done = True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:  # SSLError included
            self._send_alert()
            self._fail(f"TLS handshake failed: {_handshake_error(exc)}", exc)
            return
        try:
            self._push()
        except OSError as exc:
            self._fail(f"TLS handshake failed: {_handshake_error(exc)}", exc)
            return
        if not done:
            self._set_want(EVENT_READ | (EVENT_WRITE if self._cout else 0))
            return
        self._state = _OPEN
        self.ready = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        obj = self._c
        self.version = obj.version()
        cipher = obj.cipher()
        name = cipher[0] if cipher else ""
        conn = self.conn
        conn.transcript.record("note", note=f"TLS established: {self.version} {name}")
        self._count("handshakes")
        conn.layer_ready()
        if conn.closed:
            return
        # The raw read that finished the handshake may have brought application data too.
        self._queue_drain()

    def _send_alert(self) -> None:
        # The alert OpenSSL wrote on a failed handshake: one try, the connection closes next.
        data = self._out.read()
        if data and not self._cout:
            with contextlib.suppress(OSError):
                self.conn.sock.send(data)

    def _set_want(self, mask: int) -> None:
        self._want = mask
        self.conn.update_interest()

    def _timed_out(self) -> None:
        self._timer = None
        if self.conn.closed or self._state == _OPEN:
            return
        self._count("timeouts")
        self._fail(
            HANDSHAKE_TIMEOUT_REASON,
            TLSError(
                f"TLS handshake not complete after {self._handshake_timeout}s "
                f"({self.conn.label})"
            ),
        )

    def stall(self, on_peer_closed: Callable[[str], None] | None = None) -> None:
        """Stop the handshake here (a fault); only notice the peer closing.

        ``on_peer_closed(text)`` runs when it does (default: close with an error).
        """
        self._state = _STALLED
        self._stalled_at = time.monotonic()
        self._on_stalled_close = on_peer_closed
        if self._timer is not None:
            self._timer.cancel()  # we stall on purpose: only the peer's timeout counts
            self._timer = None
        self._set_want(EVENT_READ)

    def _stalled_read(self) -> None:
        conn = self.conn
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data = b""
            note = f"{type(exc).__name__}"
        else:
            note = f"{len(data)} B" if data else "EOF"
        if data:
            conn.transcript.record("in", len(data), note="raw, handshake stalled")
            return
        waited = time.monotonic() - self._stalled_at
        text = f"peer dropped the stalled TLS handshake after {waited:.2f}s ({note})"
        if self._on_stalled_close is not None:
            self._on_stalled_close(text)  # a fault client: this is the outcome it waited for
        else:
            conn.close(ConnectionAbortedError(text), reason="peer closed during stalled handshake")

    def _fail(self, reason: str, exc: BaseException) -> None:
        conn = self.conn
        if conn.closed:
            return
        self.failure = reason
        conn.transcript.record("note", note=reason)
        error = exc
        if not isinstance(exc, TLSError):
            error = TLSError(f"{reason} ({conn.label}, peer {conn.peer!r})")
            error.__cause__ = exc
        conn.close(error, reason=reason)
        self._count("failures")  # after close: a waiter sees the connection gone too

    def failed(self, exc: OSError) -> bool:
        if isinstance(exc, TLSError) and not self.conn.closed:
            reason = str(exc)
            self.failure = reason
            self.conn.transcript.record("note", note=reason)
            self.conn.close(exc, reason=reason)
            self._count("failures")
            return True
        return False

    # -- plaintext in -------------------------------------------------------------------------
    def readable(self) -> None:
        # One raw recv() per readiness event, then every batch it decrypts, each delivered
        # through the connection's accounting while the connection still reads.
        conn = self.conn
        self._raw_ok = True
        for _ in range(_MAX_BATCHES):
            try:
                data = self._recv()
            except (BlockingIOError, InterruptedError):
                return
            except TLSError as exc:
                self.failed(exc)
                return
            if not data:
                conn.deliver_eof()
                return
            conn.deliver(data)
            if conn.closed or conn.reading_paused or conn.eof_received:
                return
            if not self._more and self._read_error is None:
                return  # the BIO is dry: the selector reports the kernel's next bytes
        self._queue_drain()

    def _recv(self) -> bytes:
        deferred = self._read_error
        if deferred is not None:
            self._read_error = None
            return self._read_failed(deferred)
        size = self.conn.read_size
        if size >= _MAX_RECORD:
            limit, raw = max(size, _PLAIN_BATCH), max(size, _RAW_READ)
        else:
            # A slow-reader fault: small reads from the kernel, as in plaintext.
            limit = raw = size
        data: bytes | None = None
        if self._in.pending or self._c.pending():
            data = self._decrypt(limit)
        if data is None:
            if not self._raw_ok:
                raise BlockingIOError
            self._raw_ok = False
            cipher = self.conn.sock.recv(raw)
            if cipher:
                self._in.write(cipher)
            else:
                self._in.write_eof()  # the next read says how: close_notify or not
            data = self._decrypt(limit)
            if data is None:
                raise BlockingIOError
        return data

    def _decrypt(self, limit: int) -> bytes | None:
        """Plaintext from the records buffered, up to ``limit``; None when a record is partial.

        SSL_read returns one record (at most 16 KiB) per call.  Full records are joined into
        one batch (one data_received() and one echo write, as recv() on a plain socket would
        give); a short record ends the batch, so records a fault makes small (PartialSend,
        Slicer) still arrive one per read, where a test can see their boundaries.
        """
        read = self._c.read
        self._more = True
        try:
            data: bytes = read(limit)
        except ssl.SSLWantReadError:
            if self._out.pending:
                self._push()  # a post-handshake message asked for an answer
            return None
        except OSError as exc:  # SSLError included
            return self._read_failed(exc)
        if len(data) == _MAX_RECORD and limit > _MAX_RECORD:
            parts = [data]
            got = len(data)
            more = data
            try:
                while got < limit and len(more) == _MAX_RECORD:
                    more = read(limit - got)
                    if not more:
                        # close_notify behind the data: the end of the stream, next read.
                        self._read_error = ssl.SSLZeroReturnError("close_notify")
                        break
                    parts.append(more)
                    got += len(more)
            except ssl.SSLWantReadError:
                self._more = False
            except OSError as exc:
                # The end of the stream or an error behind the data: deliver the data now,
                # the error on the next read (the batch loop, or a queued drain, makes it).
                self._read_error = exc
            if len(parts) > 1:
                data = b"".join(parts)
        if self._out.pending:
            self._push()
        return data

    def _read_failed(self, exc: OSError) -> bytes:
        """What a failed read means: wait (BlockingIOError), end of stream (b""), or an error."""
        if isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
            raise BlockingIOError from None
        if isinstance(exc, ssl.SSLZeroReturnError):
            # The peer's close_notify, after we sent ours (CPython returns b"" only while we
            # have not): a clean end of stream all the same.
            return b""
        if isinstance(exc, ssl.SSLEOFError):
            self.ragged_eof = True
            self._count("ragged_eofs")
            self.conn.transcript.record("note", note="EOF without close_notify")
            return b""
        if isinstance(exc, ssl.SSLError):
            raise TLSError(f"TLS error: {_ssl_reason(exc)}") from exc
        raise exc

    def _queue_drain(self) -> None:
        if self._drain_queued or self.conn.closed:
            return
        if self._read_error is not None or self._in.pending or self._c.pending():
            self._drain_queued = True
            self.conn.loop.call_soon(self._drain)

    def _drain(self) -> None:
        # Records already in the incoming BIO (or an error read behind data): the selector
        # will not report them.
        self._drain_queued = False
        conn = self.conn
        if conn.closed or conn.reading_paused or conn.eof_received or self._state != _OPEN:
            return
        # Through the connection's own readable path, so errors end it the usual way.
        conn.handle_event(EVENT_READ)

    def resumed(self) -> None:
        if self._state == _OPEN:
            self._queue_drain()

    # -- plaintext out ------------------------------------------------------------------------
    def send(self, data: Buffer) -> int:
        """Encrypt from the front of ``data`` and send the ciphertext; the plaintext it covers.

        The connection keeps unsent plaintext at the front of its buffer and calls again with
        it, so ciphertext the kernel did not take (``_cout``) stands for the first
        ``_cout_plain`` bytes of the next call's ``data``: they count as sent once it is all
        out.  The connection's send allowance already cut ``data`` to size: under a cap of at
        most one record, each call makes one record and hands it to the kernel on its own.
        """
        if self._state != _OPEN:
            raise BlockingIOError  # buffered until the handshake is done
        if self._cout:
            if not self._flush_cout():
                raise BlockingIOError
            done = self._cout_plain
            if done:
                self._cout_plain = 0
                return done
        size = len(data)
        write = self._c.write
        take = self._out.read
        send = self.conn.sock.send
        total = 0
        try:
            while total < size:
                n = min(_WRITE_CHUNK, size - total)
                if n == size:
                    write(data)
                else:
                    with memoryview(data) as view, view[total : total + n] as chunk:
                        write(chunk)
                cipher = take()
                try:
                    sent = send(cipher)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent < len(cipher):
                    self._cout = memoryview(cipher)[sent:]
                    self._cout_plain = n
                    if total:
                        return total
                    raise BlockingIOError
                total += n
        except ssl.SSLError as exc:
            raise TLSError(f"TLS error: {_ssl_reason(exc)}") from exc
        return total

    # -- ending -------------------------------------------------------------------------------
    def before_shutdown(self) -> None:
        # close_notify, then the connection's FIN; reads go on (see the module essay for why
        # this is not a safe half-close).
        if self._state == _OPEN and self.close_notify and not self.ragged_eof:
            self._send_close_notify()

    def before_close(self, clean: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if (
            clean
            and self._state == _OPEN
            and self.close_notify
            and not self._notify_sent
            and not self.ragged_eof  # OpenSSL refuses after an unexpected EOF
        ):
            self._send_close_notify()
        self._cout = b""
        self._release()

    def _release(self) -> None:
        """Let go of the SSL object and its memory BIOs once the connection is closed.

        Why: a closed connection stays referenced for a while (a server's recently-closed
        list, a client's results, a test), and OpenSSL's buffers keep the size they grew to:
        about 1 MiB after a bulk echo to a peer that never read (the 512 KiB raw read, the
        256 KiB write chunk, the record buffers).  Sixteen of them in a TLS server's
        recently-closed list held 16 MiB it no longer needed.  What a closed connection still
        tells (``version``, ``failure``, ``ragged_eof``) is plain attributes.
        """
        self._obj = None
        self._c = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()

    def _send_close_notify(self) -> None:
        self._notify_sent = True
        conn = self.conn
        if self._obj is None:
            return
        try:
            self._obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # written; the peer's close_notify is not awaited (we are closing)
        except (ssl.SSLError, OSError):
            pass  # written; the second SSL_shutdown() call found records after it
        alert = self._out.read()
        if not alert:
            conn.transcript.record("note", note="close_notify not sent")
            return
        # Behind the rest of a record the kernel took part of: the peer needs it whole.
        data = bytes(self._cout) + alert if self._cout else alert
        try:
            sent = conn.sock.send(data)
        except OSError as exc:
            conn.transcript.record("note", note=f"close_notify not sent: {type(exc).__name__}")
            return
        if sent < len(data):
            conn.transcript.record("note", note="close_notify not sent: send buffer full")
            return
        self._cout = b""
        conn.transcript.record("note", note="close_notify sent")


def _handshake_timer_fired(ref: weakref.WeakMethod[Callable[[], None]]) -> None:
    # A weak reference: a pending timer must not keep a closed connection's layer alive.
    timed_out = ref()
    if timed_out is not None:
        timed_out()


def _handshake_error(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLEOFError):
        return "peer closed the connection"
    if isinstance(exc, ssl.SSLError):
        return _ssl_reason(exc)
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).replace("_", " ").lower()
    return str(exc)
