"""``timeout``: nothing delivered; the connection closed after a time (toxiproxy
``timeout``).

toxiproxy's ``timeout`` with ``timeout: 0`` arms no timer, but it still closes when the
stream it sits on ends (its ``Pipe`` calls ``stub.Close()`` when the input channel closes),
so a server's close reaches the client.  ``Timeout(ms=0)`` does the same; a stall that never
ends, whatever the sending side does, is ``Timeout(ms=0, hold_eof=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.core.loop import Timer
from pytest_multiconn.faults.params import flag, milliseconds, param
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic


class TimeoutStage(Stage):
    toxic: Timeout

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.timer: Timer | None = None
        self.eof_held = False

    def start(self) -> None:
        self.stop()
        if self.toxic.ms > 0:
            self.timer = self.pipe.loop.call_later(self.toxic.ms / 1e3, self._expire)

    def _expire(self) -> None:
        self.timer = None
        self.pipe.note(self, f"timed out after {self.toxic.ms:g} ms: closing")
        self.pipe.finish_connection(f"timeout {self.toxic.ms:g} ms")

    def feed(self, data: bytes) -> None:
        self.pipe.dropped(len(data))
        self.pipe.note(self, "dropped", len(data))

    def feed_eof(self) -> None:
        if self.toxic.hold_eof:
            self.eof_held = True
            self.pipe.note(self, "end-of-stream held: stalling")
            return
        self.next.feed_eof()

    def updated(self) -> None:
        self.start()  # the new timeout counts from now
        if self.eof_held and not self.toxic.hold_eof:
            self.eof_held = False
            self.next.feed_eof()

    def detach(self) -> None:
        self.stop()
        if self.eof_held:  # removed: what it held back goes on
            self.eof_held = False
            self.next.feed_eof()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Timeout(Toxic):
    """Deliver nothing (data is read and dropped); close the connection after ``ms``
    milliseconds (toxiproxy ``timeout``).  ``ms=0`` arms no timer, and, as in toxiproxy, the
    sending side's end-of-stream still passes; ``hold_eof=True`` holds it back too, so the
    direction stalls forever (until the other side or the test ends the connection)."""

    name = "timeout"
    stage_class = TimeoutStage
    quick: ClassVar[Mapping[str, Any]] = {"ms": 100}

    ms: float = param(0.0, milliseconds())
    hold_eof: bool = param(False, flag())
