"""``slicer``: the stream cut into small pieces sent apart (toxiproxy ``slicer``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults.params import integer, microseconds, param
from pytest_multiconn.faults.toxics.base import EOF_MARK, TOXICS, QueueStage, Toxic


class SlicerStage(QueueStage):
    toxic: Slicer

    def feed(self, data: bytes) -> None:
        t = self.toxic
        gap = t.delay_us / 1e6
        now = time.monotonic()
        due = now if not self.queue and self.last_due + gap <= now else self.last_due + gap
        pos, pieces = 0, 0
        while pos < len(data):
            size = t.average_size
            if t.size_variation:
                size += self.rng.randint(-t.size_variation, t.size_variation)
            self.queue.append((due, data[pos : pos + size]))
            self.last_due = due
            due += gap
            pos += size
            pieces += 1
        self.pipe.note(self, f"sliced into {pieces}" if pieces > 1 else "passed", len(data))
        if self.timer is None:
            self._run()

    def feed_eof(self) -> None:
        self.push(self.last_due, EOF_MARK)


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Slicer(Toxic):
    """Cut the stream into pieces of ``average_size`` bytes +/- ``size_variation``, sent
    ``delay_us`` microseconds apart (toxiproxy ``slicer``)."""

    name = "slicer"
    stage_class = SlicerStage
    quick: ClassVar[Mapping[str, Any]] = {"average_size": 4}

    average_size: int = param(1, integer(1))
    size_variation: int = param(0, integer(0))
    delay_us: float = param(0.0, microseconds())

    def check(self) -> None:
        if self.size_variation >= self.average_size:
            raise FaultParameterError(
                f"Slicer size_variation ({self.size_variation}) must be smaller than "
                f"average_size ({self.average_size}), so every piece has at least one byte"
            )
