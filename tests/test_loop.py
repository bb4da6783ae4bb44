"""The selector loop: start/stop, cross-thread calls, timers, dispatch, error capture, misuse."""

from __future__ import annotations

import math
import select
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any

import pytest

from helpers import WAIT, drive
from pytest_multiconn import (
    LoopStuckError,
    LoopThreadError,
)
from pytest_multiconn.core import loop as loop_module
from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, _fast_epoll, _Waker
from pytest_multiconn.lowlevel import Loop, wait_until


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
    # Without the wake-up the loop would sleep on and stop() would raise after 5 s.
    lp.stop(timeout=5)
    assert not lp.is_running()


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


# -- dispatch, errors and life cycle (from the old edge-case module) --------------------------


def test_plain_and_fast_paths_dispatch_and_record_handler_errors(driven_loop: Loop) -> None:
    loop = driven_loop
    a, b = socket.socketpair()
    with a, b:

        class Exploding:
            closed = False

            def handle_event(self, mask: int) -> None:
                raise ZeroDivisionError("handler failed on purpose")

            def close(self) -> None:
                self.closed = True
                loop.unregister(a)

        handler = Exploding()
        loop.register(a, EVENT_READ, handler)
        b.send(b"x")
        drive(loop, lambda: handler.closed, "the failing handler to be closed")
        with pytest.raises(LoopThreadError, match="handler failed on purpose"):
            loop.check()


def test_handler_unregistered_earlier_in_the_same_batch_is_skipped(driven_loop: Loop) -> None:
    loop = driven_loop
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        calls: list[int] = []

        class Greedy:
            def __init__(self, index: int) -> None:
                self.index = index

            def handle_event(self, mask: int) -> None:
                calls.append(self.index)
                for sock, _ in pairs:  # unregister both: the other one must not be called
                    if sock.fileno() in {k.fd for k in loop._selector.get_map().values()}:
                        loop.unregister(sock)

            def close(self) -> None:
                pass

        for i, (sock, other) in enumerate(pairs):
            loop.register(sock, EVENT_READ, Greedy(i))
            other.send(b"x")
        loop.run_once(1.0)
        assert len(calls) == 1, calls
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def test_events_no_longer_wanted_are_not_dispatched(driven_loop: Loop) -> None:
    loop = driven_loop
    # Both sockets are readable in one batch; the first handler to run switches the other to
    # write interest, so the other's read event is dropped and its write event comes next.
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        seen: list[tuple[int, int]] = []

        class Switcher:
            def __init__(self, index: int) -> None:
                self.index = index

            def handle_event(self, mask: int) -> None:
                seen.append((self.index, mask))
                other = pairs[1 - self.index][0]
                if not seen[:-1]:
                    loop.modify(other, EVENT_WRITE, handlers[1 - self.index])
                loop.unregister(pairs[self.index][0])

            def close(self) -> None:
                pass

        handlers = [Switcher(0), Switcher(1)]
        for i, (sock, other) in enumerate(pairs):
            loop.register(sock, EVENT_READ, handlers[i])
            other.send(b"x")
        drive(loop, lambda: len(seen) == 2, "both handlers")
        assert seen[0][1] == EVENT_READ
        assert seen[1] == (1 - seen[0][0], EVENT_WRITE)
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def test_interrupted_poll_is_an_empty_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    lp = Loop("multiconn-edges-eintr")
    try:
        if lp._epoll_poll is None:
            pytest.skip("no epoll fast path here")
        real = lp._epoll_poll
        interrupted = []

        def poll(timeout: float, maxevents: int) -> Any:
            if not interrupted:
                interrupted.append(True)
                raise InterruptedError
            return real(timeout, maxevents)

        lp._epoll_poll = poll
        ran = []
        lp.call_soon(ran.append, 1)
        lp.run_once(0)
        assert interrupted
        assert ran == [1]
    finally:
        lp.close()


def test_fast_path_only_for_a_real_epoll_selector() -> None:
    with selectors.PollSelector() as sel:
        assert _fast_epoll(sel) == (None, None)
    if hasattr(selectors, "EpollSelector"):
        with selectors.EpollSelector() as sel:
            assert _fast_epoll(sel)[0] is not None
            fd_map = sel._fd_to_key  # type: ignore[attr-defined]
            sel._fd_to_key = None  # type: ignore[attr-defined]  # a future stdlib, say
            try:
                assert _fast_epoll(sel) == (None, None)
            finally:
                sel._fd_to_key = fd_map  # type: ignore[attr-defined]


def test_epoll_mask_without_epoll(monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(select, "epoll"):
        assert loop_module._epoll_mask(select.EPOLLIN) == EVENT_READ
        assert loop_module._epoll_mask(select.EPOLLOUT) == EVENT_WRITE
        monkeypatch.delattr(select, "epoll")
    assert loop_module._epoll_mask(1) == 0


def test_waker_stops_draining_at_eof() -> None:
    r, w = socket.socketpair()
    with r, w:
        r.setblocking(False)
        w.send(b"\0\0\0")
        w.close()
        _Waker(r).handle_event(EVENT_READ)  # drains, then sees EOF, and returns
        assert r.recv(1) == b""


def test_wake_with_a_full_pipe_does_not_fail() -> None:
    lp = Loop("multiconn-edges-wake")
    try:
        lp._wake_w.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum
        ran: list[int] = []
        for i in range(5000):  # far more wake-ups than the pipe holds
            lp.call_soon_threadsafe(ran.append, i)
        assert lp.run_until(lambda: len(ran) == 5000, WAIT)
    finally:
        lp.close()
    lp.wake()  # after close: a no-op, not an error


def test_callback_errors_are_recorded_with_their_owner() -> None:
    lp = Loop("multiconn-edges-callback")
    try:
        lp.call_soon(lambda: 1 / 0)
        lp.run_once(0)
        with pytest.raises(LoopThreadError, match="ZeroDivisionError"):
            lp.check()
        lp.check()  # errors are forgotten once raised
    finally:
        lp.close()


def test_broken_repr_does_not_hide_the_error() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    lp = Loop("multiconn-edges-repr")
    try:
        lp.report_error(ValueError("the real error"), Unprintable())
        with pytest.raises(LoopThreadError, match=r"the real error in <.*Unprintable object at"):
            lp.check()
    finally:
        lp.close()


def test_more_than_one_error_is_counted() -> None:
    lp = Loop("multiconn-edges-errors")
    try:
        for i in range(3):
            lp.report_error(ValueError(f"error {i}"), "ctx")
        with pytest.raises(LoopThreadError, match=r"error 0 in 'ctx' \(and 2 more\)"):
            lp.check()
    finally:
        lp.close()


def test_base_exception_in_the_loop_thread_is_recorded_and_the_loop_closes() -> None:
    lp = Loop("multiconn-edges-baseexc")
    lp.start()

    def die() -> None:
        raise SystemExit("loop told to exit")

    lp.call_soon_threadsafe(die)
    thread = lp.thread
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive()
    assert repr(lp).startswith("<Loop 'multiconn-edges-baseexc' closed")
    with pytest.raises(LoopThreadError, match="loop told to exit"):
        lp.check()
    lp.stop()  # already finished: returns at once


def test_loop_life_cycle_misuse_is_explained() -> None:
    lp = Loop("multiconn-edges-misuse")
    assert lp.run_sync(lambda: 42) == 42  # not running: runs right here
    lp.stop()  # never started: just closes
    assert lp.handlers() == []
    assert lp.handler_count() == 0
    with pytest.raises(RuntimeError, match="closed; create a new loop"):
        lp.start()


def test_stop_from_the_loop_thread_is_scheduled_and_the_thread_ends() -> None:
    lp = Loop("multiconn-test-selfstop")
    lp.start()
    thread = lp.thread
    assert thread is not None
    # Before: stop() raised in the loop thread.  Now it asks the loop to stop, returns, and
    # the thread ends once the callback that called it has returned.
    lp.run_sync(lp.stop)
    thread.join(WAIT)
    assert not thread.is_alive(), "the loop thread kept running after stop() from inside it"
    assert "closed" in repr(lp)
    lp.stop()  # a later stop() from outside joins a thread that already ended
    lp.check()


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        (math.inf, "delay must be a finite number of seconds, .*got inf"),
        (math.nan, "delay must be a finite number of seconds, .*got nan"),
        ("1", "delay must be a finite number of seconds, .*got '1'"),
        (True, "delay must be a finite number of seconds, .*got True"),
        (30 * 24 * 3600, r"delay must be a finite number of seconds, at most 2147\d* .*2592000"),
    ],
)
def test_timer_delays_the_selector_cannot_wait_on_are_refused(delay: object, message: str) -> None:
    lp = Loop("multiconn-test-timer-limits")
    try:
        with pytest.raises(ValueError, match=message):
            lp.call_later(delay, lambda: None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="when must be a finite"):
            lp.call_at(math.inf, lambda: None)
        too_far = r"when - time.monotonic\(\) must be a finite number of seconds, at most"
        with pytest.raises(ValueError, match=too_far):
            lp.call_at(time.monotonic() + 30 * 24 * 3600, lambda: None)
        assert lp.call_later(-1.0, lambda: None).when <= time.monotonic()  # negative: now
    finally:
        lp.close()


def test_run_until_with_a_timeout_past_the_selector_limit_still_runs() -> None:
    # Before: poll() raised OverflowError ("timeout is too large") out of run_once.
    lp = Loop("multiconn-test-huge-timeout")
    a, b = socket.socketpair()
    try:
        fired: list[int] = []

        class Reader:
            def handle_event(self, mask: int) -> None:
                fired.append(mask)
                lp.unregister(a)

            def close(self) -> None:
                pass

        lp.register(a, EVENT_READ, Reader())
        b.send(b"x")  # ready at once, but the loop still computes a 40-day poll timeout
        assert lp.run_until(lambda: bool(fired), timeout=40 * 24 * 3600.0)
        assert fired == [EVENT_READ]
    finally:
        a.close()
        b.close()
        lp.close()


def test_start_that_does_not_come_up_in_time_fails() -> None:
    release = threading.Event()

    class SlowLoop(Loop):
        def _run(self) -> None:
            release.wait(WAIT)
            super()._run()

    lp = SlowLoop("multiconn-edges-slowstart")
    try:
        with pytest.raises(LoopStuckError, match=r"did not start within 0\.05s"):
            lp.start(0.05)
    finally:
        release.set()
        lp.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_loop_threads_leave_sigint_and_sigterm_to_the_main_thread() -> None:
    lp = Loop("multiconn-edges-signals")
    lp.start()
    try:
        native_id = lp.run_sync(threading.get_native_id)
        with open(f"/proc/self/task/{native_id}/status") as f:
            blocked = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk"))
        for sig in (signal.SIGINT, signal.SIGTERM):
            assert blocked & (1 << (sig - 1)), f"{sig.name} is not blocked in the loop thread"
        # ...and the thread that started the loop got its own mask back.
        assert not signal.pthread_sigmask(signal.SIG_BLOCK, set()) & {signal.SIGINT}
    finally:
        lp.stop()


def test_handler_close_errors_at_shutdown_are_recorded() -> None:
    lp = Loop("multiconn-edges-closeerr")
    a, b = socket.socketpair()
    with a, b:

        class BadClose:
            def handle_event(self, mask: int) -> None:
                pass

            def close(self) -> None:
                raise OSError("close failed on purpose")

        lp.register(a, EVENT_READ, BadClose())
        lp.add_closer(lambda: 1 / 0)
        lp.start()
        lp.stop()
        with pytest.raises(LoopThreadError, match=r"(?s)ZeroDivisionError.*and 1 more"):
            lp.check()


@pytest.mark.parametrize("timeout", [math.inf, math.nan, "1", -1])
def test_wait_bounds_must_be_finite_numbers(timeout: object) -> None:
    # An infinite bound made "every wait has a timeout" false without a word.
    lp = Loop("multiconn-test-wait-bounds")
    try:
        with pytest.raises(ValueError, match=r"^timeout must be"):
            lp.start(timeout)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^timeout must be"):
            lp.run_until(lambda: True, timeout)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^timeout must be"):
            wait_until(lambda: True, timeout)  # type: ignore[arg-type]
    finally:
        lp.close()


def test_a_forgotten_socket_closed_at_once_leaves_no_event_behind(driven_loop: Loop) -> None:
    # forget() skips epoll_ctl on the fast path: the close must take the descriptor out of
    # the epoll set, or a readable socket the map no longer knows would wake every poll.
    loop = driven_loop
    sock, other = socket.socketpair()
    try:
        calls: list[int] = []

        class Reader:
            def handle_event(self, mask: int) -> None:
                calls.append(mask)

            def close(self) -> None:
                pass

        loop.register(sock, EVENT_READ, Reader())
        other.send(b"x")  # readable now, and stays so: nobody reads it
        loop.forget(sock)
        sock.close()
        assert loop.handler_count() == 0
        loop.run_once(0)
        assert calls == []
        poll = loop._epoll_poll
        if poll is not None:  # the fast path: the kernel itself has nothing to report
            assert poll(0, 8) == []
    finally:
        sock.close()
        other.close()
