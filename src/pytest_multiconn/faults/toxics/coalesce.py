"""``coalesce``: small writes held and passed on together (the opposite of ``slicer``).

Bytes are held until ``bytes`` of them are waiting, then everything held goes on in one
piece (one write to the receiver, so its first ``recv`` can see all of it); what waits
longer than ``timeout_ms`` since the first held byte goes on as it is, and end-of-stream
flushes what is held before it.  A ``bytes`` above the proxy's high-water mark (64 KiB) is
never reached: the proxy stops reading the sender while its pipeline holds that much, so
the timeout flushes instead.  Nothing random: the rng is unused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.core.loop import Timer
from pytest_multiconn.faults.params import integer, milliseconds, param
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic


class CoalesceStage(Stage):
    toxic: Coalesce

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.held = bytearray()
        self.pieces = 0
        self.timer: Timer | None = None

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.held += data
        self.pieces += 1
        if len(self.held) >= self.toxic.bytes:
            self._flush(f"{self.toxic.bytes} B reached")
        elif self.timer is None:
            self.timer = self.pipe.loop.call_later(self.toxic.timeout_ms / 1e3, self._expire)

    def _expire(self) -> None:
        self.timer = None
        self._flush(f"{self.toxic.timeout_ms:g} ms passed")

    def _flush(self, why: str) -> None:
        self._cancel()
        if not self.held:
            return
        data, pieces = bytes(self.held), self.pieces
        self.held.clear()
        self.pieces = 0
        self.pipe.note(self, f"coalesced {pieces} piece(s) ({why})", len(data))
        self.next.feed(data)

    def feed_eof(self) -> None:
        self._flush("end-of-stream")
        self.next.feed_eof()

    def updated(self) -> None:
        if len(self.held) >= self.toxic.bytes:
            self._flush(f"{self.toxic.bytes} B reached")

    def detach(self) -> None:
        self._flush("removed")

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        self._cancel()
        self.held.clear()


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Coalesce(Toxic):
    """Hold the stream until ``bytes`` bytes wait (or ``timeout_ms`` passes, or it ends),
    then pass them on in one piece: the opposite of ``slicer``."""

    name = "coalesce"
    stage_class = CoalesceStage
    quick: ClassVar[Mapping[str, Any]] = {"bytes": 64, "timeout_ms": 20}

    bytes: int = param(1024, integer(1))
    timeout_ms: float = param(10.0, milliseconds())
