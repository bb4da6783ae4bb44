"""The proxy's faults ("toxics", after toxiproxy): parameter objects and the stages that act.

A toxic is a small frozen parameter object (``Latency(ms=50)``).  When it applies to one
direction of one proxied connection, :meth:`Toxic.make_stage` builds a *stage*: a link in
that direction's pipeline that receives bytes (``feed``) and end-of-stream (``feed_eof``) and
passes them, changed, delayed or dropped, to the next link.  The last link writes to the
socket.  Stages run only in the proxy's loop thread, use its timers, and draw every random
number from the ``random.Random`` they are given (derived from the run seed, the connection
number, the direction and the toxic's name), so a schedule replays exactly under one seed.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar, Protocol

from pytest_multiconn.core.loop import Loop, Timer

_EOF = None  # queued in place of bytes to mean end-of-stream


class Sink(Protocol):
    """The next link of a pipeline."""

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...


class PipeAPI(Protocol):
    """What a stage may ask of the direction it sits in (implemented by the proxy)."""

    loop: Loop

    def note(self, stage: Stage, text: str, size: int = 0) -> None: ...

    def dropped(self, size: int) -> None: ...

    def finish_connection(self, reason: str) -> None: ...

    def reset_connection(self, reason: str) -> None: ...

    def close_after_flush(self, reason: str) -> None: ...


def _number(name: str, value: object, *, minimum: float = 0, integer: bool = False) -> None:
    ok_types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types) or not value >= minimum:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Toxic:
    """Base class of the proxy's faults: parameters only; a stage does the work.

    Subclasses are frozen dataclasses; ``replace(**params)`` returns a checked copy.
    """

    kind: ClassVar[str] = "toxic"

    def replace(self, **params: Any) -> Toxic:
        unknown = set(params) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            names = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(
                f"{type(self).__name__} has no parameter {', '.join(sorted(unknown))}; "
                f"its parameters are: {names}"
            )
        return dataclasses.replace(self, **params)

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        raise NotImplementedError


class Stage:
    """One toxic acting on one direction of one connection (loop thread only)."""

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


class _QueueStage(Stage):
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
            if item is _EOF:
                self.next.feed_eof()
            else:
                self.next.feed(item)
        if queue and self.timer is None:
            self.timer = self.pipe.loop.call_at(queue[0][0], self._run)

    def detach(self) -> None:
        self.stop_timer()
        while self.queue:
            _, item = self.queue.popleft()
            if item is _EOF:
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


# -- latency ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Latency(Toxic):
    """Delay every chunk (and end-of-stream) by ``ms`` milliseconds, plus or minus up to
    ``jitter`` ms drawn uniformly per chunk; order is kept (toxiproxy ``latency``)."""

    kind: ClassVar[str] = "latency"
    ms: float = 0.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _number("Latency ms", self.ms)
        _number("Latency jitter", self.jitter)

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        return _LatencyStage(self, "", pipe, rng)


class _LatencyStage(_QueueStage):
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
        self.push(time.monotonic() + self._delay(), _EOF)


# -- bandwidth --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bandwidth(Toxic):
    """Limit the rate to ``rate`` kilobytes (1000 B) per second, as toxiproxy's ``bandwidth``,
    or to ``bytes_per_second``; give exactly one of them."""

    kind: ClassVar[str] = "bandwidth"
    rate: float | None = None
    bytes_per_second: float | None = None

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.bytes_per_second is None):
            raise ValueError(
                "Bandwidth needs exactly one of rate (KB/s, 1 KB = 1000 bytes) or "
                f"bytes_per_second; got rate={self.rate!r}, "
                f"bytes_per_second={self.bytes_per_second!r}"
            )
        if self.rate is not None:
            _number("Bandwidth rate", self.rate, minimum=0.001)
        else:
            _number("Bandwidth bytes_per_second", self.bytes_per_second, minimum=1)

    def replace(self, **params: Any) -> Toxic:
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

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        return _BandwidthStage(self, "", pipe, rng)


class _BandwidthStage(Stage):
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


# -- slicer -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slicer(Toxic):
    """Cut the stream into pieces of ``average_size`` bytes +/- ``size_variation``, sent
    ``delay_us`` microseconds apart (toxiproxy ``slicer``)."""

    kind: ClassVar[str] = "slicer"
    average_size: int = 1
    size_variation: int = 0
    delay_us: float = 0.0

    def __post_init__(self) -> None:
        _number("Slicer average_size", self.average_size, minimum=1, integer=True)
        _number("Slicer size_variation", self.size_variation, integer=True)
        _number("Slicer delay_us", self.delay_us)
        if self.size_variation >= self.average_size:
            raise ValueError(
                f"Slicer size_variation ({self.size_variation}) must be smaller than "
                f"average_size ({self.average_size}), so every piece has at least one byte"
            )

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        return _SlicerStage(self, "", pipe, rng)


class _SlicerStage(_QueueStage):
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
        self.push(self.last_due, _EOF)


# -- limit_data -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LimitData(Toxic):
    """Pass the first ``bytes`` bytes, drop the rest and close the connection once they are
    delivered (toxiproxy ``limit_data``)."""

    kind: ClassVar[str] = "limit_data"
    bytes: int = 0

    def __post_init__(self) -> None:
        _number("LimitData bytes", self.bytes, integer=True)

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        return _LimitDataStage(self, "", pipe, rng)


class _LimitDataStage(Stage):
    toxic: LimitData

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.passed = 0
        self.reached = False

    def start(self) -> None:
        self._check()

    def _check(self) -> None:
        if not self.reached and self.passed >= self.toxic.bytes:
            self.reached = True
            self.pipe.note(self, f"limit of {self.toxic.bytes} B reached: closing")
            self.pipe.close_after_flush(f"limit_data {self.toxic.bytes} B")

    def feed(self, data: bytes) -> None:
        room = self.toxic.bytes - self.passed
        if room <= 0 or self.reached:
            self.pipe.dropped(len(data))
            self.pipe.note(self, "dropped", len(data))
            return
        if len(data) > room:
            self.pipe.dropped(len(data) - room)
            self.pipe.note(self, "dropped", len(data) - room)
            data = data[:room]
        self.passed += len(data)
        self.next.feed(data)
        self._check()

    def feed_eof(self) -> None:
        if not self.reached:
            self.next.feed_eof()

    def updated(self) -> None:
        self._check()


# -- timeout ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timeout(Toxic):
    """Deliver nothing (data is read and dropped); close the connection after ``ms``
    milliseconds, or never if ``ms`` is 0 (toxiproxy ``timeout``)."""

    kind: ClassVar[str] = "timeout"
    ms: float = 0.0

    def __post_init__(self) -> None:
        _number("Timeout ms", self.ms)

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        return _TimeoutStage(self, "", pipe, rng)


class _TimeoutStage(Stage):
    toxic: Timeout

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.timer: Timer | None = None

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

    def updated(self) -> None:
        self.start()  # the new timeout counts from now

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# -- reset_peer -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResetPeer(Toxic):
    """Reset the connection (RST to both ends) ``timeout_ms`` milliseconds after the toxic
    starts acting on it, 0 = at once (toxiproxy ``reset_peer``)."""

    kind: ClassVar[str] = "reset_peer"
    timeout_ms: float = 0.0

    def __post_init__(self) -> None:
        _number("ResetPeer timeout_ms", self.timeout_ms)

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        return _ResetPeerStage(self, "", pipe, rng)


class _ResetPeerStage(Stage):
    toxic: ResetPeer

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.timer: Timer | None = None

    def start(self) -> None:
        self.stop()
        due = self.started_at + self.toxic.timeout_ms / 1e3
        self.timer = self.pipe.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.pipe.note(self, f"reset after {self.toxic.timeout_ms:g} ms")
        self.pipe.reset_connection(f"reset_peer {self.toxic.timeout_ms:g} ms")

    def updated(self) -> None:
        self.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# -- slow_close -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlowClose(Toxic):
    """Hold end-of-stream back for ``delay_ms`` milliseconds after the data before it
    (toxiproxy ``slow_close``)."""

    kind: ClassVar[str] = "slow_close"
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        _number("SlowClose delay_ms", self.delay_ms)

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        return _SlowCloseStage(self, "", pipe, rng)


class _SlowCloseStage(_QueueStage):
    toxic: SlowClose

    def feed(self, data: bytes) -> None:
        if self.queue:  # cannot happen (nothing follows end-of-stream), but keep order anyway
            self.push(self.last_due, data)
        else:
            self.next.feed(data)

    def feed_eof(self) -> None:
        self.pipe.note(self, f"end-of-stream held for {self.toxic.delay_ms:g} ms")
        self.push(time.monotonic() + self.toxic.delay_ms / 1e3, _EOF)


#: Toxic classes by toxiproxy's type name (used by the CLI's ``--fault`` parser).
TOXICS: dict[str, type[Toxic]] = {
    cls.kind: cls for cls in (Latency, Bandwidth, Slicer, LimitData, Timeout, ResetPeer, SlowClose)
}
