"""The proxy's faults ("toxics", after toxiproxy): the base classes every toxic builds on.

A toxic is a small frozen parameter object (``Latency(ms=50)``), shaped like every fault
(:class:`~pytest_multiconn.faults.Fault`).  When it applies to one direction of one proxied
connection, :meth:`Toxic.make_stage` builds a *stage*: a link in that direction's pipeline
that receives bytes (``feed``) and end-of-stream (``feed_eof``) and passes them, changed,
delayed or dropped, to the next link (a :class:`Sink`).  The last link writes to the socket.
Stages run only in the proxy's loop thread, use its timers, talk to their direction only
through :class:`PipeAPI`, and draw every random number from the ``random.Random`` they are
given (:func:`~pytest_multiconn.faults.fault_rng` of the run seed, family "toxic", the
connection number, the direction and the toxic's name), so a schedule replays under one seed.

One toxic per module beside this one (toxiproxy's layout); each registers in :data:`TOXICS`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar, Protocol

from pytest_multiconn.core.loop import Loop, Timer
from pytest_multiconn.faults.base import Fault, Registry

EOF_MARK = None  # queued in place of bytes to mean end-of-stream


class Sink(Protocol):
    """The next link of a pipeline."""

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...


class PipeAPI(Protocol):
    """What a stage may ask of the direction it sits in (implemented by the proxy)."""

    #: The proxy's selector loop: timers (``call_later``, ``call_at``), in its thread.
    loop: Loop

    def note(self, stage: Stage, text: str, size: int = 0) -> None:
        """Add a ``fault`` entry naming the stage to the connection's transcript."""

    def dropped(self, size: int) -> None:
        """Count ``size`` bytes the stage dropped on purpose."""

    def finish_connection(self, reason: str) -> None:
        """Close both sides after flushing what they already have to send."""

    def reset_connection(self, reason: str) -> None:
        """Reset both sides now (each peer sees ECONNRESET)."""

    def close_after_flush(self, reason: str, *, reset: bool = False) -> None:
        """Close both sides once what passed this stage has been delivered (``reset``: with
        an RST once those bytes are written, without waiting for an end-of-stream)."""

    def position(self) -> int:
        """Bytes of this direction that have passed the end of the pipeline so far: for a
        stage joining a live connection (it joins at the end), how far into the stream its
        first byte will be."""
        return 0


@dataclass(frozen=True, repr=False)
class Toxic(Fault):
    """Base class of the proxy's faults: parameters only; a stage does the work.

    A subclass sets ``name`` (toxiproxy's type name; ``kind`` is the same), declares its
    parameters and either sets ``stage_class`` or overrides :meth:`make_stage`.
    ``probability`` is this toxic's own chance of acting on one direction of one
    connection; ``FaultProxy.add(..., probability=)`` (toxiproxy's *toxicity*) applies too.
    """

    family: ClassVar[str] = "toxic"
    name: ClassVar[str] = "toxic"
    #: toxiproxy's word for ``name`` (kept: ``proxy.add()`` names entries ``<kind>_<dir>``).
    kind: ClassVar[str] = "toxic"
    #: The stage :meth:`make_stage` builds.
    stage_class: ClassVar[type[Stage]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # One name, two spellings: a toxic that sets either gets both.
        if "name" in cls.__dict__:
            cls.kind = cls.name
        elif "kind" in cls.__dict__:
            cls.name = cls.kind

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        """This toxic acting on one direction of one connection."""
        if self.probability < 1.0 and rng.random() >= self.probability:
            return NotApplied(self, "", pipe, rng)
        stage_class = getattr(type(self), "stage_class", None)
        if stage_class is None:
            raise NotImplementedError(
                f"{type(self).__name__} sets neither stage_class nor make_stage()"
            )
        stage: Stage = stage_class(self, "", pipe, rng)
        return stage


#: Toxic classes by toxiproxy's type name (the CLI's ``--fault`` parser looks them up).
TOXICS: Registry[Toxic] = Registry("toxic")


class Stage:
    """One toxic acting on one direction of one connection (loop thread only).

    ``toxic`` is the parameters (replaced on ``update()``, then :meth:`updated` runs),
    ``pipe`` the :class:`PipeAPI` of its direction, ``rng`` its random numbers and ``next``
    the :class:`Sink` it passes bytes to.
    """

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        self.toxic = toxic
        self.name = name
        self.pipe = pipe
        self.rng = rng
        self.next: Sink
        self.started_at = time.monotonic()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.toxic!r}>"

    def start(self) -> None:
        """Called once, when the stage joins a pipeline."""

    def feed(self, data: bytes) -> None:
        self.next.feed(data)

    def feed_eof(self) -> None:
        self.next.feed_eof()

    def updated(self) -> None:
        """``self.toxic`` was replaced by one with new parameters."""

    def detach(self) -> None:
        """The toxic was removed: pass on everything held, at once, and stop timers."""
        self.stop()

    def stop(self) -> None:
        """The connection closed: drop everything held and stop timers."""


class NotApplied(Stage):
    """A toxic whose ``probability`` draw said "not this connection": passes bytes through."""

    def start(self) -> None:
        self.pipe.note(self, f"not applied (p={self.toxic.probability:g})")


class QueueStage(Stage):
    """A stage that releases bytes (and end-of-stream) at scheduled times, in order."""

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.last_due = 0.0
        self.timer: Timer | None = None

    def push(self, due: float, item: bytes | None) -> None:
        due = max(due, self.last_due)  # never overtake what is already queued
        self.last_due = due
        self.queue.append((due, item))
        if self.timer is None:
            self._run()

    def _run(self) -> None:
        self.timer = None
        queue = self.queue
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, item = queue.popleft()
            if item is EOF_MARK:
                self.next.feed_eof()
            else:
                self.next.feed(item)
        if queue and self.timer is None:
            self.timer = self.pipe.loop.call_at(queue[0][0], self._run)

    def updated(self) -> None:
        """New parameters: what is queued goes on now, as toxiproxy passes on what a toxic
        holds when it is updated; what comes next follows the new parameters."""
        self.detach()

    def detach(self) -> None:
        self.stop_timer()
        self.last_due = 0.0  # what comes next does not queue behind what went
        while self.queue:
            _, item = self.queue.popleft()
            if item is EOF_MARK:
                self.next.feed_eof()
            else:
                self.next.feed(item)

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        self.stop_timer()
        self.queue.clear()
