"""``corrupt``: seeded bit flips in the stream (no toxiproxy counterpart).

Two modes, one per toxic:

* ``Corrupt(rate=0.001)``: every byte is flipped with chance ``rate``.  Rather than one draw
  per byte (a Python call per byte would cap a bulk stream at a few MB/s), the gap to the
  next flipped byte is drawn from the geometric distribution with that rate, which gives
  the same distribution of flips: ``gap = floor(log(1 - rng.random()) / log(1 - rate))``
  (0 when ``rate`` is 1), then the bit, ``rng.randrange(8)``; the next gap counts from the
  byte after the flipped one.
* ``Corrupt(offsets=(0, 17))``: the bytes at those offsets of the stream (0 = the first
  byte this direction carries) are flipped, each at bit ``rng.randrange(8)``, drawn in
  offset order.

Draws are from the stage's seeded ``random.Random`` only, so one seed flips the same bits
(:func:`flips` replays them), and each chunk's flips are noted in the transcript.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults.params import number, offsets, param
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic

_SHOWN = 8  # flips listed per transcript note (the count is always given)


def flips(toxic: Corrupt, rng: Random, start: int = 0) -> Iterator[tuple[int, int]]:
    """``(offset, bit)`` of every flip ``toxic`` makes from stream offset ``start`` on, in
    stream order, from ``rng`` (endless in rate mode).  The stage uses exactly this sequence
    (``start`` is 0, or where the stream was when the toxic was updated)."""
    if toxic.offsets:
        for offset in toxic.offsets:
            if offset >= start:
                yield offset, rng.randrange(8)
        return
    rate = toxic.rate
    position = start
    log_keep = math.log1p(-rate) if rate < 1.0 else 0.0
    while True:
        gap = 0 if rate >= 1.0 else int(math.log(1.0 - rng.random()) / log_keep)
        position += gap
        yield position, rng.randrange(8)
        position += 1


class CorruptStage(Stage):
    toxic: Corrupt

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.position = 0  # offset of the next byte fed
        self._plan: Iterator[tuple[int, int]] = iter(())
        self._next: tuple[int, int] | None = None
        self.flipped = 0

    def start(self) -> None:
        self._plan = flips(self.toxic, self.rng)
        self._next = next(self._plan, None)

    def updated(self) -> None:
        # New parameters act from the next byte on (offsets already passed are not revisited).
        self._plan = flips(self.toxic, self.rng, self.position)
        self._next = next(self._plan, None)

    def feed(self, data: bytes) -> None:
        end = self.position + len(data)
        upcoming = self._next
        if upcoming is None or upcoming[0] >= end:
            self.position = end
            self.next.feed(data)
            return
        out = bytearray(data)
        done: list[str] = []
        while upcoming is not None and upcoming[0] < end:
            offset, bit = upcoming
            out[offset - self.position] ^= 1 << bit
            done.append(f"{offset}:{bit}")
            upcoming = next(self._plan, None)
        self._next = upcoming
        self.flipped += len(done)
        shown = ", ".join(done[:_SHOWN]) + (", ..." if len(done) > _SHOWN else "")
        self.pipe.note(self, f"flipped {len(done)} bit(s) at offset:bit {shown}", len(data))
        self.position = end
        self.next.feed(bytes(out))


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Corrupt(Toxic):
    """Flip bits: each byte with chance ``rate``, or the bytes at ``offsets`` of the stream;
    seeded bit choice, noted in the transcript."""

    name = "corrupt"
    stage_class = CorruptStage
    quick: ClassVar[Mapping[str, Any]] = {"rate": 0.01}

    rate: float = param(0.0, number(0.0, 1))
    offsets: tuple[int, ...] = param((), offsets())

    def check(self) -> None:
        if self.rate and self.offsets:
            raise FaultParameterError(
                f"Corrupt takes rate or offsets, not both (got rate={self.rate!r}, "
                f"offsets={self.offsets!r})"
            )
        if not self.rate and not self.offsets:
            raise FaultParameterError(
                "Corrupt needs rate > 0 (chance per byte) or offsets (bytes to flip); "
                "with neither it would change nothing"
            )
