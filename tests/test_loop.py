"""The selector loop: start/stop, cross-thread calls, timers, error capture."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pytest_multiconn import LoopStuckError, LoopThreadError
from pytest_multiconn.core.loop import EVENT_READ
from pytest_multiconn.lowlevel import Loop


@pytest.fixture
def loop() -> Loop:
    lp = Loop("multiconn-test-loop")
    lp.start()
    yield lp
    if lp.is_running():
        lp.stop()


def test_start_runs_thread_and_stop_joins_it() -> None:
    lp = Loop("multiconn-test-startstop")
    lp.start()
    thread = lp.thread
    assert thread is not None
    assert thread.is_alive()
    assert thread.name == "multiconn-test-startstop"
    lp.stop()
    assert not thread.is_alive()
    assert "closed" in repr(lp)


def test_start_twice_is_an_error(loop: Loop) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        loop.start()


def test_call_soon_threadsafe_runs_in_loop_thread(loop: Loop) -> None:
    seen: list[int] = []
    done = threading.Event()

    def record() -> None:
        seen.append(threading.get_ident())
        done.set()

    loop.call_soon_threadsafe(record)
    assert done.wait(5), "callback never ran: the loop was not woken"
    assert loop.thread is not None
    assert seen == [loop.thread.ident]


def test_timers_fire_in_order_and_cancel(loop: Loop) -> None:
    fired: list[str] = []
    done = threading.Event()

    def schedule() -> None:
        loop.call_later(0.03, fired.append, "late")
        cancelled = loop.call_later(0.01, fired.append, "cancelled")
        cancelled.cancel()
        loop.call_later(0.0, fired.append, "early")
        loop.call_later(0.05, done.set)

    loop.call_soon_threadsafe(schedule)
    assert done.wait(5)
    assert fired == ["early", "late"]


def test_run_sync_returns_and_raises(loop: Loop) -> None:
    assert loop.run_sync(lambda: threading.current_thread().name) == "multiconn-test-loop"

    def boom() -> None:
        raise KeyError("from the loop")

    with pytest.raises(KeyError, match="from the loop"):
        loop.run_sync(boom)


def test_run_sync_times_out_naming_the_thread_when_loop_is_blocked(loop: Loop) -> None:
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait, 5)
    try:
        with pytest.raises(LoopStuckError, match="multiconn-test-loop"):
            loop.run_sync(lambda: None, timeout=0.05)
    finally:
        release.set()


def test_stop_fails_loudly_when_a_handler_blocks(loop: Loop) -> None:
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait, 5)
    with pytest.raises(LoopStuckError, match="did not stop within"):
        loop.stop(timeout=0.05)
    release.set()
    loop.stop()
    assert loop.thread is not None
    assert not loop.thread.is_alive()


def test_handler_errors_are_reraised_by_check_and_the_handler_is_closed(loop: Loop) -> None:
    a, b = socket.socketpair()
    closed = threading.Event()

    class Broken:
        def handle_event(self, mask: int) -> None:
            raise ValueError("handler broke")

        def close(self) -> None:
            loop.unregister(a)
            a.close()
            closed.set()

        def __repr__(self) -> str:
            return "<Broken handler>"

    try:
        loop.run_sync(lambda: loop.register(a, EVENT_READ, Broken()))
        b.send(b"x")
        assert closed.wait(5), "the failing handler was not closed"
        with pytest.raises(LoopThreadError, match="handler broke") as info:
            loop.check()
        assert "<Broken handler>" in str(info.value)
        assert isinstance(info.value.__cause__, ValueError)
        loop.check()  # errors are reported once
    finally:
        b.close()
        a.close()


def test_stop_wakes_an_idle_loop_promptly() -> None:
    # The loop blocks in select() with no timeout; only the socketpair can wake it.
    lp = Loop("multiconn-test-wake")
    lp.start()
    started = time.perf_counter()
    lp.stop(timeout=5)
    assert time.perf_counter() - started < 1.0


def test_run_until_drives_loop_in_caller_thread() -> None:
    lp = Loop("multiconn-test-foreground")
    hits: list[int] = []
    try:
        lp.call_later(0.01, hits.append, 1)
        assert lp.run_until(lambda: bool(hits), timeout=5)
        assert not lp.run_until(lambda: False, timeout=0.02)
    finally:
        lp.close()
    assert lp.handler_count() == 0
