"""A direction's pipeline: the fault stages of one direction of one connection, then the gate.

The one engine for stream faults: the proxy (each direction of a proxied connection) and
every server (what it sends, "downstream", and what it receives, "upstream") run their
faults through a :class:`Pipe`.  A direction gets one only when a fault (or the proxy's step
mode) applies to it; without one the bytes go straight on.  The stages are the faults' own
(:class:`~pytest_multiconn.faults.Stage`, seen through :class:`~pytest_multiconn.faults.PipeAPI`);
the last link, :class:`Gate`, hands the bytes to the destination or holds them for a test
that steps the connection.  What a pipe asks of the code around it is three narrow
Protocols: :class:`PipeSource` (where the bytes come from: it may be paused),
:class:`PipeTarget` (where they go) and :class:`PipePair` (the connection: transcript, finish,
reset).

Fairness.  A stage may turn one read into many writes (``Slicer(average_size=1)`` makes a
64 KiB read into 65,536 one-byte writes), and every other connection on the proxy waits while
the loop makes them.  So a direction's gate makes at most :data:`TURN_WRITES` writes in one
loop turn; what the stages deliver beyond that waits in the gate's backlog (it still counts
as in flight, so the source stops being read at the high-water mark) and the rest is written
on the following turns, through ``loop.call_soon`` (a zero-delay callback runs once per turn:
one the loop queues during a turn runs at the next).  A direction with a pipeline also reads
at most :data:`PIPED_READ_SIZE` bytes at a time, which bounds what a stage can be handed in
one turn.  Order is kept: bytes and end-of-stream leave the backlog in the order they came.

Pieces.  Each piece the stages deliver leaves in a send() of its own (``Side.write_apart``),
also when it waits: in the gate's backlog, which also keeps what arrives while the connect to
the target is still in progress (written once it finished), or in the destination's output
buffer.  A stage's request to reset or close the connection waits for the backlog: the bytes
that passed the stage before it (the chunk that completed a ``When`` match) go first.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, Protocol

from pytest_multiconn.core.layer import Recorder
from pytest_multiconn.core.loop import Loop
from pytest_multiconn.faults.toxics.base import Stage

Direction = Literal["upstream", "downstream", "both"]
DIRECTIONS: tuple[str, str] = ("upstream", "downstream")
SHORT = {"upstream": "up", "downstream": "down"}

#: Writes one direction's gate may make in one loop turn before it yields to the others.
TURN_WRITES = 64
#: The read size of a side whose direction has a pipeline (the default is 64 KiB).
PIPED_READ_SIZE = 16 * 1024


def check_direction(direction: str, *, allow_both: bool) -> tuple[str, ...]:
    """The directions ``direction`` names, or a ValueError naming the allowed values."""
    if direction == "both" and allow_both:
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    allowed = '"upstream" (client to server), "downstream" (server to client)'
    if allow_both:
        allowed += ' or "both"'
    raise ValueError(f"direction must be {allowed}, got {direction!r}")


class PipePair(Protocol):
    """What a pipeline asks of the connection it belongs to (a proxied pair, a server's
    connection)."""

    @property
    def transcript(self) -> Recorder: ...

    def finish(self, reason: str) -> None:
        """Close after flushing what is already on its way (a stage's ``finish_connection``)."""

    def reset(self, reason: str) -> None:
        """Reset now (a stage's ``reset_connection``)."""

    def held_changed(self) -> None:
        """Step mode: what the gate holds changed (wake the waiters)."""


class PipeSource(Protocol):
    """Where a direction's bytes come from: paused while the pipe holds too much."""

    @property
    def intake_paused(self) -> bool:
        """True while :meth:`pause_intake` is in force."""
        ...

    def pause_intake(self) -> None:
        """Stop feeding the pipe (more than ``high_water`` bytes are in flight)."""

    def resume_intake(self) -> None:
        """Feed it again (in flight fell to ``low_water``)."""


class PipeTarget(Protocol):
    """Where a direction's bytes go once they passed the stages."""

    @property
    def accepting(self) -> bool:
        """False while bytes must wait in the gate (the proxy's connect to the target)."""
        ...

    def put(self, data: bytes) -> None:
        """One piece a stage delivered: it leaves in a send() of its own."""

    def put_merged(self, data: bytes) -> None:
        """Bytes a stepping test released (no piece boundaries)."""

    def put_eof(self) -> None:
        """End of stream."""


class Gate:
    """The pipeline's last link: writes to the socket, or holds bytes in step mode."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def feed(self, data: bytes) -> None:
        self.pipe.deliver(data)

    def feed_eof(self) -> None:
        self.pipe.deliver_eof()


class Pipe:
    """Toxic stages for one direction of one connection, then the gate (loop thread only)."""

    def __init__(self, pair: PipePair, direction: str, src: PipeSource, dst: PipeTarget, *,
                 loop: Loop, high_water: int, low_water: int, passed: int = 0) -> None:
        self.pair = pair
        self.direction = direction
        self.loop = loop
        self.src = src
        self.dst = dst
        self.stages: list[Stage] = []
        self.gate = Gate(self)
        self.head: Any = self.gate
        self.held = False
        self.held_bytes = bytearray()
        self.held_eof = False
        self.inflight = 0  # bytes fed and not yet written or dropped
        # Bytes of the direction past the stages: those relayed before this pipe existed
        # (``passed``), then those its stages delivered (PipeAPI.position).
        self.passed = passed
        self.eof_in = False
        self.eof_out = False
        self.cut = False  # end-of-stream was forced by the test: drop what follows
        self.closing: str | None = None
        self.closing_reset = False  # close_after_flush(reset=True): an RST, not a FIN
        self.stopped = False
        self.high_water = high_water
        self.low_water = low_water
        # Fairness (see the module docstring): writes left in this turn, and what waits.
        self.budget = TURN_WRITES
        self.backlog: deque[bytes] = deque()
        self.backlog_eof = False
        self.turn_queued = False
        # A stage's reset_connection/finish_connection, waiting for the backlog to be written.
        self.ending: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return (
            f"<Pipe {self.direction} stages={[s.name for s in self.stages]} held={self.held} "
            f"inflight={self.inflight} pending={len(self.held_bytes)} "
            f"backlog={len(self.backlog)}>"
        )

    # -- the source side feeds ----------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.inflight += len(data)
        if self.cut:
            self.dropped(len(data))
            return
        self.head.feed(data)
        if self.inflight > self.high_water and not self.src.intake_paused:
            self.src.pause_intake()

    def feed_eof(self) -> None:
        self.eof_in = True
        if self.cut:
            return
        self.head.feed_eof()

    # -- the gate ---------------------------------------------------------------------------
    def deliver(self, data: bytes) -> None:
        self.passed += len(data)
        if self.held:
            self.held_bytes += data
            self.pair.held_changed()
            return
        if self.backlog or self.budget <= 0 or not self.dst.accepting:
            self.backlog.append(data)
            self._queue_turn()
            return
        self.budget -= 1
        if not self.budget:
            self._queue_turn()  # a fresh budget next turn
        self.inflight -= len(data)
        self.dst.put(data)
        self._drained()

    def deliver_eof(self) -> None:
        if self.held:
            self.held_eof = True
            self.pair.held_changed()
            return
        if self.backlog or not self.dst.accepting:
            self.backlog_eof = True  # after the bytes before it
            self._queue_turn()
            return
        self._write_eof()

    def dst_connected(self) -> None:
        """The connect to the destination finished: write what waited for it."""
        if self.backlog or self.backlog_eof or self.ending is not None:
            self._queue_turn()

    def _queue_turn(self) -> None:
        if not self.turn_queued and not self.stopped:
            self.turn_queued = True
            self.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """A new loop turn: a fresh budget, spent on the backlog first."""
        self.turn_queued = False
        self.budget = TURN_WRITES
        if self.stopped:
            return
        if self.held:
            self._hold_backlog()
            self._end_if_written()
            return
        dst = self.dst
        if not dst.accepting:
            return  # dst_connected() queues the next turn
        backlog = self.backlog
        if not backlog and not self.backlog_eof:
            self._end_if_written()
            return
        written = 0
        while backlog and self.budget > 0:
            data = backlog.popleft()
            self.budget -= 1
            written += len(data)
            dst.put(data)
        self.inflight -= written
        if backlog:
            self._queue_turn()
        elif self.backlog_eof:
            self.backlog_eof = False
            self._write_eof()
        self._drained()
        self._end_if_written()

    def _end_if_written(self) -> None:
        if self.ending is None or self.backlog or self.stopped:
            return
        how, reason = self.ending
        self.ending = None
        if how == "reset":
            self.pair.reset(reason)
        else:
            self.pair.finish(reason)

    def _hold_backlog(self) -> None:
        # Bytes that waited for a turn were delivered before the hold: they are held first.
        while self.backlog:
            self.held_bytes += self.backlog.popleft()
        if self.backlog_eof:
            self.backlog_eof = False
            self.held_eof = True
        self.pair.held_changed()

    def hold(self) -> None:
        """Step mode: keep what reaches the gate until the test releases it."""
        self.held = True
        if self.backlog or self.backlog_eof:
            self._hold_backlog()

    def _write_eof(self) -> None:
        self.eof_out = True
        self.dst.put_eof()
        self._drained()

    def dropped(self, size: int) -> None:
        self.inflight -= size
        self._drained()

    def _drained(self) -> None:
        if self.src.intake_paused and self.inflight <= self.low_water:
            self.src.resume_intake()
        if self.closing is not None and self._flushed(self.closing_reset):
            reason, self.closing = self.closing, None
            self._end(reason, reset=self.closing_reset)

    def idle(self) -> bool:
        """Nothing in flight: every byte (and end-of-stream, if it came) was delivered."""
        return self.inflight <= 0 and (not self.eof_in or self.eof_out or self.cut)

    def _flushed(self, reset: bool) -> bool:
        # A reset does not wait for an end-of-stream (the stage that asked swallows it: the
        # peer must see the RST, not a FIN first), only for the bytes before it.
        return self.inflight <= 0 if reset else self.idle()

    def _end(self, reason: str, *, reset: bool) -> None:
        if reset:
            self.pair.reset(reason)
        else:
            self.pair.finish(reason)

    # -- what stages may ask (PipeAPI) ---------------------------------------------------------
    def note(self, stage: Stage, text: str, size: int = 0) -> None:
        self.pair.transcript.record("fault", size, f"{stage.name}: {text}")

    def finish_connection(self, reason: str) -> None:
        if self.backlog:  # bytes that passed the stage first go first
            self.ending = self.ending or ("finish", reason)
            return
        self.pair.finish(reason)

    def reset_connection(self, reason: str) -> None:
        if self.backlog:  # bytes that passed the stage first go first (then the RST)
            self.ending = ("reset", reason)
            return
        self.pair.reset(reason)

    def close_after_flush(self, reason: str, *, reset: bool = False) -> None:
        if self._flushed(reset):
            self._end(reason, reset=reset)
        else:
            self.closing = reason
            self.closing_reset = reset

    def position(self) -> int:
        return self.passed

    # -- toxics -------------------------------------------------------------------------------
    def _relink(self) -> None:
        chain: list[Any] = [*self.stages, self.gate]
        for stage, nxt in zip(self.stages, chain[1:], strict=True):
            stage.next = nxt
        self.head = chain[0]

    def add(self, stage: Stage) -> None:
        self.stages.append(stage)
        self._relink()
        stage.start()

    def remove(self, name: str) -> bool:
        for i, stage in enumerate(self.stages):
            if stage.name == name:
                del self.stages[i]
                self._relink()
                stage.detach()  # passes what it held to its old next link, in order
                return True
        return False

    # -- step mode ------------------------------------------------------------------------------
    def release(self, n: int) -> None:
        data = bytes(self.held_bytes[:n])
        del self.held_bytes[:n]
        self.inflight -= len(data)
        self.pair.transcript.record("fault", len(data), f"step: released {self.direction}")
        self.dst.put_merged(data)
        self._drained()

    def release_eof(self) -> int:
        discarded = len(self.held_bytes)
        if discarded:
            self.held_bytes.clear()
            self.pair.transcript.record(
                "fault", discarded, f"step: dropped {self.direction} at forced end-of-stream"
            )
        self.inflight -= discarded
        self.held_eof = False
        self.cut = True
        self.pair.transcript.record("fault", 0, f"step: end-of-stream sent {self.direction}")
        self._write_eof()
        return discarded

    def unhold(self) -> None:
        self.held = False
        if self.held_bytes:
            self.release(len(self.held_bytes))
        if self.held_eof:
            self.held_eof = False
            self._write_eof()

    def stop(self) -> None:
        self.stopped = True
        self.backlog.clear()
        for stage in self.stages:
            stage.stop()


__all__ = [
    "DIRECTIONS",
    "PIPED_READ_SIZE",
    "SHORT",
    "TURN_WRITES",
    "Direction",
    "Gate",
    "Pipe",
    "PipePair",
    "PipeSource",
    "PipeTarget",
    "check_direction",
]
