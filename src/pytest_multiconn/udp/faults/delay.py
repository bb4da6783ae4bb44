"""``delay``: every datagram late by ``ms`` plus or minus ``jitter``; order is not kept."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.core.loop import Timer
from pytest_multiconn.faults.params import EPOLL_MAX_MS, fail, milliseconds, param
from pytest_multiconn.udp.faults.base import UDP_FAULTS, Datagram, DatagramFault, DatagramStage


class DelayStage(DatagramStage):
    fault: Delay

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.heap: list[tuple[float, int, Datagram]] = []
        self.seq = itertools.count()
        self.timer: Timer | None = None

    def act(self, datagram: Datagram) -> None:
        f = self.fault
        jitter = self.rng.uniform(-f.jitter, f.jitter) if f.jitter else 0.0
        delay_ms = max(0.0, f.ms + jitter)
        self.note(datagram, f"delayed {delay_ms:.1f}ms")
        heapq.heappush(self.heap, (time.monotonic() + delay_ms / 1e3, next(self.seq), datagram))
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.pipe.loop.call_at(self.heap[0][0], self._due) if self.heap else None

    def _due(self) -> None:
        self.timer = None
        now = time.monotonic()
        while self.heap and self.heap[0][0] <= now:
            self.next.feed(heapq.heappop(self.heap)[2])
        self._arm()

    def pending(self) -> int:
        return len(self.heap)

    def detach(self) -> None:
        self._cancel()
        while self.heap:
            self.next.feed(heapq.heappop(self.heap)[2])

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        self._cancel()
        self.heap.clear()


@UDP_FAULTS.register
@dataclass(frozen=True, repr=False)
class Delay(DatagramFault):
    """Deliver each datagram ``ms`` milliseconds late, plus or minus up to ``jitter`` ms drawn
    uniformly per datagram; a datagram may overtake another, as on a real network."""

    name = "delay"
    stage_class = DelayStage
    quick: ClassVar[Mapping[str, Any]] = {"ms": 20}

    ms: float = param(0.0, milliseconds())
    jitter: float = param(0.0, milliseconds())

    def check(self) -> None:
        if self.ms + self.jitter > EPOLL_MAX_MS:
            raise fail("Delay", "ms + jitter", self.ms + self.jitter,
                       f"at most {EPOLL_MAX_MS} (the longest timer the loop can arm)")
