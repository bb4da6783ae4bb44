"""A server connection's stream faults: the proxy's pipeline, on what a server sends and reads.

``ProtocolServer(handler, faults=[Latency(ms=50)])`` (and so ``EchoServer``) runs the same
fault objects as :class:`~pytest_multiconn.FaultProxy`, through the same engine
(:class:`~pytest_multiconn.faults.pipeline.Pipe`): "downstream" is what the server sends (the
handler's writes, before the socket), "upstream" what it receives (the socket's bytes, before
the handler's ``data_received``).  Both act on plaintext, above any TLS layer.

A connection gets a :class:`ConnectionFaults` only when a fault applies to it, and a
direction gets a pipe only when a fault acts on it; what it asks of its connection is
:class:`FaultHost`, a handful of public methods.

A reset a fault asks for (``LimitData(reset=True)``, ``ResetPeer``) goes out once the bytes
that passed the faults before it left: an RST makes the kernel throw away what it has not
delivered yet, and a server's output buffer and kernel send queue hold megabytes, so "exactly
n bytes, then an RST" needs the wait.  From the request on, nothing more is read or sent; the
wait polls the connection's :meth:`FaultHost.unsent` on a loop timer, bounded by
:data:`RESET_DRAIN_TIMEOUT` (a client that does not read gets the RST then).
"""

from __future__ import annotations

import time
from typing import Protocol

from pytest_multiconn.core.layer import Recorder
from pytest_multiconn.core.loop import Loop, Timer
from pytest_multiconn.faults.pipeline import Pipe
from pytest_multiconn.faults.table import FaultEntry, install
from pytest_multiconn.faults.toxics.base import Toxic

#: How long a reset waits for the bytes before it to reach the peer (seconds).
RESET_DRAIN_TIMEOUT = 2.0
#: How often it looks (the kernel's send queue gives no event when it empties).
RESET_DRAIN_POLL = 0.001


class FaultHost(Protocol):
    """What the faults ask of the server connection they act on (loop thread)."""

    loop: Loop
    bytes_in: int
    bytes_out: int

    @property
    def closed(self) -> bool: ...

    @property
    def transcript(self) -> Recorder: ...

    def pass_in(self, data: bytes) -> None:
        """Bytes past the upstream faults: to the handler."""

    def pass_in_eof(self) -> None:
        """The peer's end of stream past the upstream faults: to the handler."""

    def pass_out(self, data: bytes) -> None:
        """Bytes past the downstream faults: to the socket (or the TLS layer)."""

    def pass_out_eof(self) -> None:
        """Our end of stream past the downstream faults: a half-close, or the close asked for."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def finish_now(self) -> None:
        """Close once the socket's output is flushed, whatever the faults still hold."""

    def reset(self) -> None: ...

    def unsent(self) -> int:
        """Bytes written and not yet delivered to the peer: those still buffered by the
        connection (or its TLS layer), and those in the kernel's send queue that the peer has
        not acknowledged (where the platform can say)."""

    def notify(self) -> None:
        """Wake the server's waiters."""


class _Upstream:
    """The upstream pipe's ends: the socket's reading (source) and the handler (target)."""

    __slots__ = ("faults", "host", "intake_paused")

    def __init__(self, faults: ConnectionFaults) -> None:
        self.faults = faults
        self.host = faults.host
        self.intake_paused = False

    def pause_intake(self) -> None:
        self.intake_paused = True
        self.host.pause_reading()

    def resume_intake(self) -> None:
        self.intake_paused = False
        if not self.host.closed and not self.faults.resetting:
            self.host.resume_reading()

    @property
    def accepting(self) -> bool:
        return True

    def put(self, data: bytes) -> None:
        if not self.host.closed and not self.faults.resetting:
            self.host.pass_in(data)

    put_merged = put

    def put_eof(self) -> None:
        if not self.host.closed and not self.faults.resetting:
            self.host.pass_in_eof()


class _Downstream:
    """The downstream pipe's ends: the handler's writes (source) and the socket (target)."""

    __slots__ = ("faults", "host", "intake_paused")

    def __init__(self, faults: ConnectionFaults) -> None:
        self.faults = faults
        self.host = faults.host
        self.intake_paused = False

    def pause_intake(self) -> None:
        self.intake_paused = True
        self.host.pause_writing()  # as when the output buffer is full: the handler hears it

    def resume_intake(self) -> None:
        self.intake_paused = False
        if not self.host.closed:
            self.host.resume_writing()

    @property
    def accepting(self) -> bool:
        return True

    def put(self, data: bytes) -> None:
        if not self.faults.resetting:  # a reset is waiting for what went before to leave
            self.host.pass_out(data)

    put_merged = put

    def put_eof(self) -> None:
        if not self.host.closed and not self.faults.resetting:  # no FIN before the RST
            self.host.pass_out_eof()


class ConnectionFaults:
    """The fault pipes of one server connection (the :class:`PipePair` they belong to)."""

    def __init__(self, host: FaultHost, number: int, *, seed: int, high_water: int,
                 low_water: int) -> None:
        self.host = host
        self.number = number
        self.seed = seed
        self.high_water = high_water
        self.low_water = low_water
        self.up: Pipe | None = None
        self.down: Pipe | None = None
        #: A fault asked for a reset: it waits for the bytes before it to leave.
        self.resetting = False
        self.drain_timer: Timer | None = None

    def __repr__(self) -> str:
        return f"<ConnectionFaults #{self.number} up={self.up!r} down={self.down!r}>"

    # -- PipePair ----------------------------------------------------------------------------
    @property
    def transcript(self) -> Recorder:
        return self.host.transcript

    def finish(self, reason: str) -> None:
        host = self.host
        if host.closed or self.resetting:  # a reset on its way: no FIN before the RST
            return
        host.transcript.record("note", 0, f"closing: {reason}")
        host.finish_now()

    def reset(self, reason: str) -> None:
        host = self.host
        if host.closed or self.resetting:
            return
        self.resetting = True
        host.transcript.record("note", 0, f"resetting: {reason}")
        host.pause_reading()  # nothing new comes in, so no reply goes on growing the queue
        self._reset_when_sent(time.monotonic() + RESET_DRAIN_TIMEOUT)

    def _reset_when_sent(self, deadline: float) -> None:
        self.drain_timer = None
        host = self.host
        if host.closed:
            return
        unsent = host.unsent()
        if unsent and time.monotonic() < deadline:
            self.drain_timer = host.loop.call_later(
                RESET_DRAIN_POLL, lambda: self._reset_when_sent(deadline))
            return
        if unsent:
            host.transcript.record(
                "note", unsent, f"{RESET_DRAIN_TIMEOUT:g} s and the peer has not read them all")
        host.reset()

    def held_changed(self) -> None:
        self.host.notify()

    # -- the table's faults ------------------------------------------------------------------
    def pipe(self, direction: str) -> Pipe:
        host = self.host
        if direction == "upstream":
            if self.up is None:
                ends = _Upstream(self)
                self.up = Pipe(self, direction, ends, ends, loop=host.loop,
                               high_water=self.high_water, low_water=self.low_water,
                               passed=host.bytes_in)
            return self.up
        if self.down is None:
            out = _Downstream(self)
            self.down = Pipe(self, direction, out, out, loop=host.loop,
                             high_water=self.high_water, low_water=self.low_water,
                             passed=host.bytes_out)
        return self.down

    def add(self, entry: FaultEntry[Toxic]) -> None:
        for direction in entry.directions():
            if self.host.closed:
                return
            install(entry, direction, seed=self.seed, number=self.number,
                    pipe=self.pipe(direction), transcript=self.host.transcript)

    def update(self, name: str, fault: Toxic) -> None:
        for pipe in (self.up, self.down):
            if pipe is not None:
                for stage in list(pipe.stages):
                    if getattr(stage, "toxic_name", None) == name:
                        stage.toxic = fault
                        stage.updated()

    def remove(self, name: str) -> None:
        for pipe in (self.up, self.down):
            if pipe is not None:
                for stage in list(pipe.stages):
                    if getattr(stage, "toxic_name", None) == name:
                        pipe.remove(stage.name)

    def idle_out(self) -> bool:
        """Nothing waits in the downstream faults (a close may go now)."""
        return self.down is None or self.down.idle()

    def stop(self) -> None:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        for pipe in (self.up, self.down):
            if pipe is not None:
                pipe.stop()


__all__ = ["ConnectionFaults", "FaultHost"]
