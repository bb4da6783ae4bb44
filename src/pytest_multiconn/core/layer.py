"""What a byte layer under a :class:`~pytest_multiconn.core.connection.Connection` must offer.

A *layer* sits between the raw socket and the connection's plaintext: the connection hands it
the plaintext it writes and the readiness events while it is not ready (a handshake), and the
layer hands back the plaintext it decodes with ``Connection.deliver()`` / ``deliver_eof()``.
TLS (:class:`pytest_multiconn.tls.stream.TLSLayer`) is the one layer shipped; core knows it
only through the two Protocols below, so nothing here imports ``ssl``.

Everything a connection does to its plaintext happens *above* the layer, through the same code
in plaintext and over TLS: ``send_allowance()`` caps each write (faults chunk the output
with it), ``after_send()`` sees what left, water marks, ``hold_output()``, ``finish()`` and
``write_eof()`` count plaintext.  A connection without a layer (``layer is None``) talks to the
socket directly; that is the hot path, and it pays one ``is None`` test per event for this.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Protocol

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.loop import Loop

#: What a connection writes and a layer sends.
Buffer = bytes | bytearray | memoryview


class Recorder(Protocol):
    """The part of a connection's transcript a layer writes to."""

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0) -> None:
        """Add an event ("in", "out", "note"...)."""


class LayerHost(Protocol):
    """What a layer may ask of the connection above it (all public on ``Connection``)."""

    sock: socket.socket
    loop: Loop
    label: str
    peer: SocketAddress | None
    read_size: int

    @property
    def closed(self) -> bool: ...

    @property
    def transcript(self) -> Recorder: ...

    @property
    def reading_paused(self) -> bool: ...

    @property
    def eof_received(self) -> bool: ...

    def deliver(self, data: bytes) -> None:
        """Plaintext from the peer: counted, then ``data_received()``."""

    def deliver_eof(self) -> None:
        """The peer's end of stream: ``on_eof()``."""

    def layer_ready(self) -> None:
        """The layer is open: ``connection_made()`` runs, plaintext flows."""

    def handle_event(self, mask: int) -> None:
        """The connection's selector callback (a layer replays reads the selector cannot see)."""

    def update_interest(self) -> None:
        """Ask the layer's ``interest()`` / ``backlog()`` again."""

    def close(self, exc: BaseException | None = None, reason: str = "") -> None:
        """Close now."""


class StreamLayer(Protocol):
    """One connection's layer (loop thread only).  Every method may raise ``OSError``.

    The connection calls, in this order of life: ``start()`` once TCP is up; while ``ready``
    is False, ``interest()`` and ``handle_event()`` for every readiness event; once the layer
    has called ``Connection.layer_ready()``, ``readable()`` / ``send()`` / ``flush()`` for the
    plaintext, ``before_shutdown()`` before a half-close, ``before_close()`` once.
    """

    #: False until plaintext can flow (a handshake is done).
    ready: bool
    #: False when a half-close may lose data the peer still sends (the connection's
    #: ``half_close_safe`` says so to faults such as HalfClose).
    half_close_safe: bool

    def start(self) -> None:
        """TCP is up: begin (a handshake); call ``Connection.layer_ready()`` once open."""

    def interest(self) -> int:
        """The selector mask wanted while not ``ready``."""
        ...

    def handle_event(self, mask: int) -> None:
        """A readiness event while not ``ready`` (the connection does nothing else with it)."""

    def readable(self) -> None:
        """The socket is readable: read, decode, deliver with ``Connection.deliver*()``."""

    def send(self, data: Buffer) -> int:
        """Encode and send from the front of ``data``; return the plaintext bytes the kernel
        took (all of their encoding), or raise ``BlockingIOError`` when none.  The connection
        keeps the rest at the front of its buffer and calls again with it."""
        ...

    def backlog(self) -> bool:
        """True while the layer holds bytes of its own for the kernel (EVENT_WRITE)."""
        ...

    def flush(self) -> bool:
        """Send the layer's own bytes (no plaintext behind them); True when none is left."""
        ...

    def resumed(self) -> None:
        """Reading resumed: decode what the layer already holds (the selector cannot see it)."""

    def failed(self, exc: OSError) -> bool:
        """A read or write raised ``exc``: True when the layer closed the connection for it."""
        ...

    def before_shutdown(self) -> None:
        """Our write side is about to shut down (a half-close): end the layer's stream."""

    def before_close(self, clean: bool) -> None:
        """The socket is about to close; ``clean``: a graceful close, not an error or reset."""


class LayerFactory(Protocol):
    """What a server is given to put a layer under each connection it accepts."""

    def new_layer(self, conn: LayerHost, notify: Callable[[], None]) -> StreamLayer:
        """The layer of one new connection; ``notify()`` wakes the server's waiters."""
        ...

    def stats(self) -> Mapping[str, int]:
        """Counters merged into :class:`~pytest_multiconn.core.server.ServerStats`."""
        ...
