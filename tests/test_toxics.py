"""Each toxic's stage, driven through the public ``Stage`` / ``PipeAPI`` with a fake pipe.

The pipe, its loop and the clock are fakes: timers fire when the test advances the clock,
so delays and pacing are checked exactly, without waiting and without sockets (the wire
behaviour through a real proxy is in test_proxy_faults.py).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from random import Random
from typing import Any

import pytest

from pytest_multiconn.faults import fault_rng
from pytest_multiconn.faults.toxics import (
    bandwidth,
    latency,
    reset_peer,
    slicer,
    slow_close,
    timeout,
)
from pytest_multiconn.faults.toxics import base as toxics_base
from pytest_multiconn.proxy import (
    TOXICS,
    Bandwidth,
    Latency,
    LimitData,
    PipeAPI,
    ResetPeer,
    Slicer,
    SlowClose,
    Stage,
    Timeout,
    Toxic,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """call_at / call_later / call_soon on a fake clock; ``advance`` fires what is due."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.heap: list[tuple[float, int, FakeTimer]] = []
        self.order = itertools.count()

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        heapq.heappush(self.heap, (when, next(self.order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        return self.call_at(self.clock.now + delay, callback, *args)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        self.call_at(self.clock.now, callback, *args)

    def pending(self) -> list[FakeTimer]:
        return [t for _, _, t in sorted(self.heap) if not t.cancelled]

    def advance(self, seconds: float) -> None:
        end = self.clock.now + seconds
        for _ in range(100_000):  # bound: a stage that re-arms forever fails the test
            live = [(w, o, t) for w, o, t in self.heap if not t.cancelled]
            self.heap = live
            heapq.heapify(self.heap)
            if not self.heap or self.heap[0][0] > end + 1e-9:  # float sums of delays
                break
            when, _, timer = heapq.heappop(self.heap)
            self.clock.now = max(self.clock.now, when)
            timer.callback(*timer.args)
        else:
            raise AssertionError("timers kept firing: a stage re-arms without progress")
        self.clock.now = end


class FakePipe:
    """A PipeAPI that records what stages ask of it."""

    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.notes: list[str] = []
        self.dropped_bytes = 0
        self.finished: list[str] = []
        self.resets: list[str] = []
        self.flush_closes: list[str] = []

    def note(self, stage: Stage, text: str, size: int = 0) -> None:
        self.notes.append(text)

    def dropped(self, size: int) -> None:
        self.dropped_bytes += size

    def finish_connection(self, reason: str) -> None:
        self.finished.append(reason)

    def reset_connection(self, reason: str) -> None:
        self.resets.append(reason)

    def close_after_flush(self, reason: str, *, reset: bool = False) -> None:
        self.flush_closes.append(f"{reason} (reset)" if reset else reason)

    def position(self) -> int:
        return 0


class Collect:
    """The next link: records (time, bytes) and (time, None) for end-of-stream."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.items: list[tuple[float, bytes | None]] = []

    def feed(self, data: bytes) -> None:
        self.items.append((self.clock.now, data))

    def feed_eof(self) -> None:
        self.items.append((self.clock.now, None))

    @property
    def data(self) -> bytes:
        return b"".join(d for _, d in self.items if d is not None)

    @property
    def eof(self) -> bool:
        return any(d is None for _, d in self.items)


class Bench:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.loop = FakeLoop(clock)
        self.pipe = FakePipe(self.loop)
        self.sink = Collect(clock)

    def stage(self, toxic: Toxic, seed: int = 1) -> Stage:
        pipe: PipeAPI = self.pipe  # type: ignore[assignment]  # a fake loop
        stage = toxic.make_stage(pipe, fault_rng(seed, "toxic", 1, "downstream", toxic.name))
        stage.next = self.sink
        stage.start()
        return stage


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Bench:
    clock = FakeClock()
    for module in (toxics_base, latency, bandwidth, slicer, slow_close, timeout, reset_peer):
        if hasattr(module, "time"):  # the modules that read the clock themselves
            monkeypatch.setattr(module, "time", clock)
    return Bench(clock)


def test_latency_delays_each_chunk_and_the_eof_by_ms(bench: Bench) -> None:
    stage = bench.stage(Latency(ms=50))
    start = bench.clock.now
    stage.feed(b"one")
    bench.loop.advance(0.010)
    stage.feed(b"two")
    stage.feed_eof()
    bench.loop.advance(0.039)
    assert bench.sink.items == []
    bench.loop.advance(0.001)
    assert bench.sink.items == [(start + 0.050, b"one")]
    bench.loop.advance(0.010)
    assert bench.sink.items[1:] == [(start + 0.060, b"two"), (start + 0.060, None)]


def test_latency_update_passes_on_what_it_holds_and_new_bytes_follow_the_new_ms(
    bench: Bench,
) -> None:
    # toxiproxy interrupts a toxic on update and passes on what it held; so do we.
    stage = bench.stage(Latency(ms=60_000))
    start = bench.clock.now
    stage.feed(b"held")
    stage.toxic = Latency(ms=0)
    stage.updated()
    assert bench.sink.items == [(start, b"held")]
    stage.feed(b"next")  # not queued behind the old deadline
    bench.loop.advance(0)
    assert bench.sink.items[1:] == [(start, b"next")]
    stage.toxic = Latency(ms=10)
    stage.updated()
    stage.feed(b"late")
    bench.loop.advance(0.010)
    assert bench.sink.items[2:] == [(start + 0.010, b"late")]
    assert bench.loop.pending() == []


def test_bandwidth_update_passes_on_what_it_holds(bench: Bench) -> None:
    stage = bench.stage(Bandwidth(rate=0.001))  # 1 B/s
    stage.feed(b"abcdef")
    stage.toxic = Bandwidth(bytes_per_second=1000)
    stage.updated()
    assert bench.sink.data == b"abcdef"
    stage.feed(b"x" * 100)  # paced at the new rate, not held at 1 B/s
    bench.loop.advance(0.049)
    assert 40 <= len(bench.sink.data) - 6 <= 60
    bench.loop.advance(0.1)
    assert bench.sink.data == b"abcdef" + b"x" * 100


def test_latency_jitter_keeps_order_and_replays_under_one_seed(bench: Bench) -> None:
    def arrival_times(seed: int) -> list[float]:
        b = Bench(bench.clock)
        stage = b.stage(Latency(ms=20, jitter=15), seed=seed)
        t0 = bench.clock.now
        for i in range(20):
            stage.feed(bytes([i]))
        b.loop.advance(1.0)
        assert b.sink.data == bytes(range(20))  # order kept whatever the jitter
        return [round(t - t0, 6) for t, _ in b.sink.items]

    first, again, other = arrival_times(3), arrival_times(3), arrival_times(4)
    assert first == again
    assert first != other
    assert all(0.005 <= t <= 0.035 for t in first)
    assert first == sorted(first)


def test_bandwidth_paces_to_the_rate(bench: Bench) -> None:
    stage = bench.stage(Bandwidth(bytes_per_second=1000))
    stage.feed(b"x" * 100)
    stage.feed_eof()
    bench.loop.advance(0.049)
    assert 40 <= len(bench.sink.data) <= 60
    bench.loop.advance(0.2)
    assert bench.sink.data == b"x" * 100
    assert bench.sink.eof
    assert all(len(d) <= 10 for _, d in bench.sink.items if d)  # 10 ms slices


def test_bandwidth_detach_passes_everything_at_once(bench: Bench) -> None:
    stage = bench.stage(Bandwidth(rate=0.001))  # 1 B/s
    stage.feed(b"abcdef")
    stage.detach()
    assert bench.sink.data == b"abcdef"
    assert bench.loop.pending() == []


def test_slicer_cuts_pieces_apart_in_order(bench: Bench) -> None:
    stage = bench.stage(Slicer(average_size=4, size_variation=2, delay_us=1000))
    stage.feed(b"0123456789" * 4)
    bench.loop.advance(1.0)
    sizes = [len(d) for _, d in bench.sink.items if d]
    assert bench.sink.data == b"0123456789" * 4
    assert all(2 <= s <= 6 for s in sizes[:-1])
    times = [t for t, _ in bench.sink.items]
    assert all(b - a == pytest.approx(0.001) for a, b in itertools.pairwise(times))


def test_limit_data_passes_n_bytes_then_asks_for_a_close(bench: Bench) -> None:
    stage = bench.stage(LimitData(bytes=5))
    stage.feed(b"abc")
    assert bench.pipe.flush_closes == []
    stage.feed(b"defgh")
    assert bench.sink.data == b"abcde"
    assert bench.pipe.dropped_bytes == 3
    assert bench.pipe.flush_closes == ["limit_data 5 B"]
    stage.feed(b"more")  # after the limit, no more data passes...
    assert bench.sink.data == b"abcde"
    stage.feed_eof()  # ...but the EOF does: the pipe closes only once nothing is in flight
    assert bench.sink.eof


def test_limit_data_zero_closes_at_start(bench: Bench) -> None:
    bench.stage(LimitData(bytes=0))
    assert bench.pipe.flush_closes == ["limit_data 0 B"]


def test_limit_data_with_reset_asks_for_a_reset_after_n_bytes(bench: Bench) -> None:
    stage = bench.stage(LimitData(bytes=5, reset=True))
    stage.feed(b"abcdefgh")
    assert bench.sink.data == b"abcde"
    assert bench.pipe.flush_closes == ["limit_data 5 B (reset)"]


def test_timeout_drops_data_and_finishes_after_ms(bench: Bench) -> None:
    stage = bench.stage(Timeout(ms=100))
    stage.feed(b"lost")
    assert bench.sink.items == []
    assert bench.pipe.dropped_bytes == 4
    bench.loop.advance(0.099)
    assert bench.pipe.finished == []
    bench.loop.advance(0.001)
    assert bench.pipe.finished == ["timeout 100 ms"]


def test_timeout_zero_passes_the_eof_as_toxiproxy_does(bench: Bench) -> None:
    stage = bench.stage(Timeout(ms=0))
    stage.feed(b"lost")
    stage.feed_eof()
    assert bench.sink.items == [(bench.clock.now, None)]
    assert bench.loop.pending() == []  # no timer: it never closes by itself


def test_timeout_hold_eof_stalls_until_removed(bench: Bench) -> None:
    stage = bench.stage(Timeout(ms=0, hold_eof=True))
    stage.feed_eof()
    bench.loop.advance(3600.0)
    assert bench.sink.items == []
    assert bench.pipe.finished == []
    stage.detach()
    assert bench.sink.eof


def test_timeout_update_restarts_the_timer(bench: Bench) -> None:
    stage = bench.stage(Timeout(ms=100))
    bench.loop.advance(0.050)
    stage.toxic = stage.toxic.replace(ms=200)
    stage.updated()
    bench.loop.advance(0.150)
    assert bench.pipe.finished == []
    bench.loop.advance(0.050)
    assert bench.pipe.finished == ["timeout 200 ms"]


def test_reset_peer_resets_after_timeout_ms(bench: Bench) -> None:
    bench.stage(ResetPeer(timeout_ms=30))
    bench.loop.advance(0.029)
    assert bench.pipe.resets == []
    bench.loop.advance(0.001)
    assert bench.pipe.resets == ["reset_peer 30 ms"]


def test_slow_close_holds_only_the_eof(bench: Bench) -> None:
    stage = bench.stage(SlowClose(delay_ms=40))
    start = bench.clock.now
    stage.feed(b"data")
    assert bench.sink.items == [(start, b"data")]
    stage.feed_eof()
    bench.loop.advance(0.039)
    assert not bench.sink.eof
    bench.loop.advance(0.001)
    assert bench.sink.items[-1] == (start + 0.040, None)


def test_stop_cancels_timers_and_drops_what_is_held(bench: Bench) -> None:
    stage = bench.stage(Latency(ms=10))
    stage.feed(b"held")
    stage.stop()
    bench.loop.advance(1.0)
    assert bench.sink.items == []


def test_probability_zero_passes_bytes_through_and_says_so(bench: Bench) -> None:
    stage = bench.stage(Latency(ms=1000, probability=0.0))
    stage.feed(b"now")
    assert bench.sink.items == [(bench.clock.now, b"now")]
    assert any("not applied" in n for n in bench.pipe.notes)


def test_a_custom_toxic_on_public_types_runs_in_a_pipeline(bench: Bench) -> None:
    # Written as a user would: only names from pytest_multiconn.proxy / .faults.
    from dataclasses import dataclass

    from pytest_multiconn.faults.params import integer, param

    class UpperStage(Stage):
        toxic: Upper

        def feed(self, data: bytes) -> None:
            self.pipe.note(self, "shouted", len(data))
            self.next.feed(data.upper()[: self.toxic.keep])

    @dataclass(frozen=True, repr=False)
    class Upper(Toxic):
        name = "upper"
        stage_class = UpperStage
        keep: int = param(1024, integer(1))

    stage = bench.stage(Upper(keep=3))
    stage.feed(b"hello")
    stage.feed_eof()
    assert bench.sink.data == b"HEL"
    assert bench.sink.eof
    assert bench.pipe.notes == ["shouted"]
    assert Upper(keep=3).kind == "upper"
    assert "upper" not in TOXICS  # registering is explicit (TOXICS.register)
    with pytest.raises(ValueError, match=r"Upper: keep must be an integer >= 1, got 0"):
        Upper(keep=0)


@pytest.mark.parametrize("value", [math.inf, math.nan, -1, 2**31, "5", True])
def test_timer_parameters_the_loop_cannot_wait_for_are_refused(value: object) -> None:
    # Before: Latency(ms=inf) was accepted and its first timer killed the proxy's loop
    # thread (OverflowError from epoll), cutting every connection.
    for make in (lambda: Latency(ms=value), lambda: Timeout(ms=value),  # type: ignore[arg-type]
                 lambda: ResetPeer(timeout_ms=value), lambda: SlowClose(delay_ms=value)):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=repr(value).replace("(", r"\(")):
            make()


def test_random_draws_come_from_the_rng_given(bench: Bench) -> None:
    toxic = Slicer(average_size=8, size_variation=6)

    def sizes(rng: Random) -> list[int]:
        b = Bench(bench.clock)
        pipe: PipeAPI = b.pipe  # type: ignore[assignment]
        stage = toxic.make_stage(pipe, rng)
        stage.next = b.sink
        stage.feed(b"x" * 400)
        return [len(d) for _, d in b.sink.items if d]

    assert sizes(fault_rng(5, "toxic", 1, "upstream", "slicer")) == \
        sizes(fault_rng(5, "toxic", 1, "upstream", "slicer"))
    assert sizes(fault_rng(5, "toxic", 1, "upstream", "slicer")) != \
        sizes(fault_rng(5, "toxic", 2, "upstream", "slicer"))


def test_an_old_style_custom_toxic_still_works(bench: Bench) -> None:
    # 0.1 custom toxics set ``kind``, override make_stage and use a plain frozen dataclass.
    from dataclasses import dataclass

    class Drop(Stage):
        def feed(self, data: bytes) -> None:
            self.pipe.dropped(len(data))

    @dataclass(frozen=True)
    class Blackhole(Toxic):
        kind = "blackhole"

        def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
            return Drop(self, "", pipe, rng)

    assert Blackhole.name == "blackhole"
    stage = bench.stage(Blackhole())
    stage.feed(b"gone")
    assert bench.pipe.dropped_bytes == 4
    assert bench.sink.items == []
