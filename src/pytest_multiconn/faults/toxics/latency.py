"""``latency``: every chunk and the end-of-stream delayed (toxiproxy ``latency``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.faults.params import EPOLL_MAX_MS, fail, milliseconds, param
from pytest_multiconn.faults.toxics.base import EOF_MARK, TOXICS, QueueStage, Toxic


class LatencyStage(QueueStage):
    toxic: Latency

    def _delay(self) -> float:
        t = self.toxic
        jitter = self.rng.uniform(-t.jitter, t.jitter) if t.jitter else 0.0
        return max(0.0, t.ms + jitter) / 1e3

    def feed(self, data: bytes) -> None:
        delay = self._delay()
        self.pipe.note(self, "delayed", len(data))
        self.push(time.monotonic() + delay, data)

    def feed_eof(self) -> None:
        self.push(time.monotonic() + self._delay(), EOF_MARK)


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Latency(Toxic):
    """Delay every chunk (and end-of-stream) by ``ms`` milliseconds, plus or minus up to
    ``jitter`` ms drawn uniformly per chunk; order is kept (toxiproxy ``latency``)."""

    name = "latency"
    stage_class = LatencyStage
    quick: ClassVar[Mapping[str, Any]] = {"ms": 50}

    ms: float = param(0.0, milliseconds())
    jitter: float = param(0.0, milliseconds())

    def check(self) -> None:
        if self.ms + self.jitter > EPOLL_MAX_MS:
            raise fail("Latency", "ms + jitter", self.ms + self.jitter,
                       f"at most {EPOLL_MAX_MS} (the longest timer the loop can arm)")
