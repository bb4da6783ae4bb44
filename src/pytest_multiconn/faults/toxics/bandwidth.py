"""``bandwidth``: the rate limited, paced in small slices (toxiproxy ``bandwidth``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar, Self

from pytest_multiconn.core.loop import Timer
from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults.params import number, optional, param
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic


class BandwidthStage(Stage):
    """Sends a slice every few milliseconds, each slice sized to keep the average rate."""

    toxic: Bandwidth
    #: Seconds of data per slice: small enough to look smooth, large enough to be cheap.
    SLICE_SECONDS = 0.01

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.buf = bytearray()
        self.eof = False
        self.next_send = 0.0
        self.timer: Timer | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        self.pipe.note(self, "paced", len(data))
        if self.timer is None:
            self._pump()

    def feed_eof(self) -> None:
        self.eof = True
        if self.timer is None:
            self._pump()

    def _pump(self) -> None:
        self.timer = None
        now = time.monotonic()
        if self.next_send > now:
            self.timer = self.pipe.loop.call_at(self.next_send, self._pump)
            return
        bps = self.toxic.bps
        if self.buf:
            n = min(len(self.buf), max(1, int(bps * self.SLICE_SECONDS)))
            piece = bytes(self.buf[:n])
            del self.buf[:n]
            self.next_send = max(self.next_send, now - self.SLICE_SECONDS) + n / bps
            self.next.feed(piece)
        if self.buf or (self.eof and self.next_send > time.monotonic()):
            self.timer = self.pipe.loop.call_at(self.next_send, self._pump)
        elif self.eof:
            self.eof = False
            self.next.feed_eof()

    def updated(self) -> None:
        """New rate: what is held goes on now (toxiproxy passes on what a toxic holds when it
        is updated), and the new rate paces what comes next."""
        self.detach()
        self.next_send = 0.0

    def detach(self) -> None:
        self._cancel()
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            self.next.feed(data)
        if self.eof:
            self.eof = False
            self.next.feed_eof()

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        self._cancel()
        self.buf.clear()


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Bandwidth(Toxic):
    """Limit the rate to ``rate`` kilobytes (1000 B) per second, as toxiproxy's ``bandwidth``,
    or to ``bytes_per_second``; give exactly one of them."""

    name = "bandwidth"
    stage_class = BandwidthStage
    quick: ClassVar[Mapping[str, Any]] = {"rate": 100}

    # Finite: an infinite rate is no limit (remove the toxic), and inf breaks the pacing.
    rate: float | None = param(None, optional(number(0.001, unit="KB/s")))
    bytes_per_second: float | None = param(None, optional(number(1.0, unit="bytes/s")))

    def check(self) -> None:
        if (self.rate is None) == (self.bytes_per_second is None):
            raise FaultParameterError(
                "Bandwidth needs exactly one of rate (KB/s, 1 KB = 1000 bytes) or "
                f"bytes_per_second; got rate={self.rate!r}, "
                f"bytes_per_second={self.bytes_per_second!r}"
            )

    def replace(self, **params: Any) -> Self:
        # Giving one unit replaces the other.
        if "rate" in params and "bytes_per_second" not in params:
            params["bytes_per_second"] = None
        elif "bytes_per_second" in params and "rate" not in params:
            params["rate"] = None
        return super().replace(**params)

    @property
    def bps(self) -> float:
        """The limit in bytes per second."""
        if self.rate is not None:
            return float(self.rate) * 1000.0
        return float(self.bytes_per_second or 0.0)
