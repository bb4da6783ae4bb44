"""The selector loop: one selector, a timer heap, and a socketpair to wake it.

A :class:`Loop` runs either in a background thread (``start()`` / ``stop()``, used by servers
and proxies) or in the caller's thread (``run_until()``, used by clients).  Handlers are
registered with their socket and live in ``SelectorKey.data``; the loop calls
``handler.handle_event(mask)`` for each ready key.

Other threads never poke at handlers directly: they queue a callback with
``call_soon_threadsafe`` and the loop is woken by one byte on a ``socketpair()``, so there is no
poll interval anywhere and ``stop()`` returns as soon as the thread has closed its sockets.
"""

from __future__ import annotations

import heapq
import itertools
import math
import select
import selectors
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pytest_multiconn.core.checks import MAX_DELAY, check_number, check_seconds

# DEFAULT_TIMEOUT is defined with the one wait; every layer imports it from here (an explicit
# re-export, which mypy strict needs).
from pytest_multiconn.core.wait import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT  # noqa: PLC0414
from pytest_multiconn.core.wait import wait_loop
from pytest_multiconn.errors import LoopStuckError, LoopThreadError

T = TypeVar("T")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

_loop_ids = itertools.count(1)

# Signals that loop threads never take (see ``Loop.start``); empty where masks do not exist.
_BLOCK_IN_LOOP_THREADS: frozenset[signal.Signals] = (
    frozenset({signal.SIGINT, signal.SIGTERM})
    if hasattr(signal, "pthread_sigmask")
    else frozenset()
)


# How epoll's bits map to selectors' EVENT_READ/EVENT_WRITE, exactly as EpollSelector.select
# maps them: any bit but EPOLLIN (EPOLLOUT, EPOLLERR, EPOLLHUP...) makes a key writable, any bit
# but EPOLLOUT makes it readable; the caller then masks with the key's registered events.
def _epoll_mask(event: int) -> int:
    if not hasattr(select, "epoll"):
        return 0
    return (EVENT_WRITE if event & ~select.EPOLLIN else 0) | (
        EVENT_READ if event & ~select.EPOLLOUT else 0
    )


_EPOLL_TO_MASK = [_epoll_mask(_ev) for _ev in range(64)]


def _fast_epoll(sel: selectors.BaseSelector) -> tuple[Any, Any]:
    """``(epoll.poll, fd -> SelectorKey map)`` of an EpollSelector, or ``(None, None)``.

    Why: ``EpollSelector.select()`` costs, per ready socket, a method call and a tuple, about a
    tenth of our whole per-event cost in an echo benchmark.  Registration still goes through the
    selector, so ``SelectorKey.data`` is still the handler and ``get_map()`` still lists every
    handler; the loop only reads the selector's own fd map (a private attribute of the
    standard library, stable since 3.4) and calls its epoll object.  Any other selector, or a
    Python whose EpollSelector lacks those attributes, takes the plain ``select()`` path.
    One difference, for the better: keys are looked up as each event is dispatched, so a
    handler that an earlier handler of the same batch closed is not called on its closed socket.
    """
    if type(sel) is not getattr(selectors, "EpollSelector", None):
        return None, None
    epoll = getattr(sel, "_selector", None)
    fd_to_key = getattr(sel, "_fd_to_key", None)
    if not isinstance(fd_to_key, dict) or not hasattr(epoll, "poll"):
        return None, None
    return epoll.poll, fd_to_key  # type: ignore[union-attr]


def _check_delay(delay: object, name: str) -> float:
    # Zero or negative is "now"; past MAX_DELAY the selector cannot wait.
    seconds = check_number(
        delay, name, above=-math.inf, at_most=MAX_DELAY,
        what=f"a finite number of seconds, at most {int(MAX_DELAY)} (about "
        f"{MAX_DELAY / 86400:.1f} days, the longest the selector can wait)",
    )
    return max(0.0, seconds)


class Handler(Protocol):
    """What the loop keeps in ``SelectorKey.data``."""

    def handle_event(self, mask: int) -> None: ...

    def close(self) -> None: ...


class _Waker:
    """Selector data for the wake-up socket: reading it drains the pipe, nothing more."""

    __slots__ = ("rsock",)

    def __init__(self, rsock: socket.socket) -> None:
        self.rsock = rsock

    def handle_event(self, mask: int) -> None:
        try:
            while self.rsock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        """The waker is closed by the loop itself, after every handler."""


@dataclass(order=True)
class Timer:
    """A callback scheduled on the loop; ``cancel()`` it from the loop thread."""

    when: float
    seq: int
    callback: Callable[..., object] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False, default=())
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(frozen=True)
class LoopErrorRecord:
    """One exception caught in the loop thread, with the handler it came from."""

    exc: BaseException
    context: str
    when: float

    def format(self) -> str:
        tb = "".join(traceback.format_exception(self.exc))
        return f"in {self.context}:\n{tb}"


class Loop:
    """A selector loop.  Start it in a thread, or drive it from the caller with ``run_until``."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"multiconn-loop-{next(_loop_ids)}"
        self._selector = selectors.DefaultSelector()
        try:
            # Out of descriptors (EMFILE) here: close the selector now, not at a later
            # garbage collection (the traceback's frames keep this half-built loop alive).
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._selector.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, EVENT_READ, _Waker(self._wake_r))
        self._epoll_poll, self._fd_to_key = _fast_epoll(self._selector)
        self._ready: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self._running = threading.Event()
        self._stop_requested = False
        self._closed = False
        # Free only while the loop thread waits in epoll (see run_while_idle): held from
        # here on, released around each poll of a threaded epoll loop.
        self._idle_lock = threading.Lock()
        self._idle_lock.acquire()
        self._release_while_polling = False
        self._close_lock = threading.Lock()
        self.errors: list[LoopErrorRecord] = []
        #: Called in the loop thread, after an error was recorded (servers use it to notify).
        self.on_error: Callable[[LoopErrorRecord], None] | None = None
        self._closers: list[Callable[[], None]] = []
        #: ``time.monotonic()`` read once right after each poll returned: handlers that stamp
        #: every event (a hot echo path) read it instead of the clock, once per batch.
        self.poll_time = time.monotonic()

    # -- introspection -------------------------------------------------------------------
    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self.is_running() else "idle")
        return (
            f"<Loop {self.name!r} {state} handlers={self.handler_count()} "
            f"timers={len(self._timers)} errors={len(self.errors)}>"
        )

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def is_running(self) -> bool:
        return self._running.is_set() and not self._closed

    @property
    def closed(self) -> bool:
        """Closed for good: its handlers are closed and it can run no more."""
        return self._closed

    @property
    def stopping(self) -> bool:
        """A stop was asked for (it happens once the running callback returns)."""
        return self._stop_requested

    def in_loop_thread(self) -> bool:
        ident = self._thread_ident
        return ident is None or ident == threading.get_ident()

    def handler_count(self) -> int:
        """Registered handlers, not counting the waker."""
        if self._closed:
            return 0
        return max(0, len(self._selector.get_map()) - 1)

    def handlers(self) -> list[Any]:
        """The handlers registered now (a copy; call from the loop thread or via run_sync)."""
        if self._closed:
            return []
        return [
            k.data for k in list(self._selector.get_map().values()) if k.fileobj is not self._wake_r
        ]

    # -- registration (loop thread) ---------------------------------------------------------
    def register(self, sock: socket.socket, events: int, handler: Handler) -> None:
        self._selector.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int, handler: Handler) -> None:
        self._selector.modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)

    def forget(self, sock: socket.socket) -> None:
        """Unregister ``sock``, which the caller closes right after: on the epoll fast path
        only the selector's map forgets it, because closing the descriptor takes it out of
        the epoll set (none of ours is duplicated), and the ``epoll_ctl`` call saved is, on a
        stop from the test's thread, a hand-off of the GIL to a loop thread that woke up
        meanwhile and back (issue 25).  Raises KeyError if it is not registered."""
        fd_to_key = self._fd_to_key
        if fd_to_key is None:
            self._selector.unregister(sock)
        else:
            del fd_to_key[sock.fileno()]

    def add_closer(self, closer: Callable[[], None]) -> None:
        """Run ``closer()`` in the loop thread when the loop closes, before its handlers close.

        Owners use it for what may not be registered at that moment (a paused listener, a
        connection that reads nothing and has nothing to write).
        """
        self._closers.append(closer)

    # -- scheduling -------------------------------------------------------------------------
    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the next iteration (loop thread only)."""
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Queue ``callback(*args)`` from any thread and wake the loop."""
        self._ready.append((callback, args))
        self.wake()

    def run_while_idle(self, fn: Callable[[], object]) -> bool:
        """Run ``fn()`` in the calling thread now if this loop's thread is waiting for I/O,
        holding it there until ``fn`` returns; True if it ran, False if not (the thread is
        running a handler or a callback, the loop is not a threaded epoll loop, or it stops)
        or if ``fn`` declined by returning False (it found, with the thread held, that the
        loop thread must do the work).

        For registering or closing a socket without a round trip to the loop thread: each
        hand-off wakes a CPU that may have gone idle, which is most of what a short-lived
        server costs (issue 25).  ``fn`` must be quick and must not wait for the loop; the
        loop is woken if it queued a callback or a timer.
        """
        if self._closed or self._stop_requested or not self._idle_lock.acquire(blocking=False):
            return False
        try:
            timers = len(self._timers)
            done = fn() is not False
            if self._ready or len(self._timers) != timers:
                self.wake()
        finally:
            self._idle_lock.release()
        return done

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full, so the loop is going to wake anyway
        except OSError:
            pass  # closed: the loop is gone and nobody is waiting on it

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Schedule ``callback(*args)`` after ``delay`` seconds (loop thread only).

        A negative delay means "now"; a delay that is not a finite number, or is longer than
        the selector can wait (``MAX_DELAY``, about 24.8 days), raises ``ValueError`` here
        rather than killing the loop thread when it comes to wait on it.
        """
        return self.call_at(time.monotonic() + _check_delay(delay, "delay"), callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Schedule ``callback(*args)`` at monotonic time ``when`` (same limits as call_later)."""
        check_number(when, "when", above=-math.inf, at_most=math.inf,
                     what="a finite time.monotonic() value")
        _check_delay(when - time.monotonic(), "when - time.monotonic()")
        timer = Timer(when, next(self._seq), callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def run_sync(
        self, fn: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, *, after_io: bool = False
    ) -> T:
        """Run ``fn()`` in the loop thread and return its result, waiting at most ``timeout``.

        ``after_io=True`` runs it only after one more poll of the selector, so every event the
        kernel had delivered before this call (a peer's FIN, say) was handled first, and so
        were the callbacks those events scheduled (a handler's ``connection_lost``, which runs
        one loop turn after the close, as in asyncio).  Why: the callback is queued while the
        loop may be dispatching a batch polled *before* the caller's last socket operation;
        one extra zero-timeout poll closes that window.
        """
        check_seconds(timeout, "timeout")
        if self.in_loop_thread() or not self.is_running():
            return fn()
        done = threading.Event()
        box: list[Any] = []

        def call() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
                box.append((False, exc))
            finally:
                done.set()

        if after_io:
            # Queued from the loop thread, the second callback runs after the next poll
            # (which does not block: the ready queue is not empty); queued once more from
            # there, it runs after the callbacks that poll's events scheduled.
            self.call_soon_threadsafe(self.call_soon, self.call_soon, call)
        else:
            self.call_soon_threadsafe(call)
        if not done.wait(timeout):
            raise LoopStuckError(
                f"loop thread {self.name!r} did not run a callback within {timeout}s; "
                "a handler is blocking the loop (see the thread's stack with py-spy dump)"
            )
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    # -- errors ---------------------------------------------------------------------------
    def report_error(self, exc: BaseException, context: object) -> None:
        """Record an exception raised by a handler; ``check()`` re-raises it later."""
        try:
            ctx = repr(context)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
            ctx = object.__repr__(context)
        record = LoopErrorRecord(exc, ctx, time.monotonic())
        self.errors.append(record)
        if self.on_error is not None:
            self.on_error(record)

    def check(self) -> None:
        """Raise the first error recorded in the loop thread, then forget them all."""
        if not self.errors:
            return
        errors, self.errors = self.errors, []
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise LoopThreadError(
            f"{self.name}: {type(first.exc).__name__}: {first.exc} in {first.context}{more}\n"
            + "\n".join(e.format() for e in errors[:5])
        ) from first.exc

    # -- running ----------------------------------------------------------------------------
    def run_once(self, timeout: float | None) -> None:
        """One iteration: wait for I/O (or the next timer), dispatch, run due callbacks."""
        if self._ready:
            timeout = 0.0
        elif self._timers:
            delay = self._timers[0].when - time.monotonic()
            timeout = max(0.0, delay) if timeout is None else max(0.0, min(timeout, delay))
        if timeout is not None and timeout > MAX_DELAY:
            # epoll_wait takes a C int of milliseconds: wait as long as it can, then come
            # round again (run_until with a huge timeout must not raise OverflowError here).
            timeout = MAX_DELAY
        poll = self._epoll_poll
        if poll is None:
            fd_map = self._selector.get_map()
            events = self._selector.select(timeout)
            self.poll_time = time.monotonic()
            for key, ready in events:
                # As on the fast path: a handler earlier in this batch may have unregistered
                # (closed) this one, or changed what it waits for.
                current = fd_map.get(key.fd)
                if current is None or not ready & current.events:
                    continue
                mask = ready & current.events
                handler = current.data
                try:
                    handler.handle_event(mask)
                except Exception as exc:  # noqa: BLE001 - recorded, re-raised by check()
                    self._handler_failed(handler, exc)
        else:
            self._dispatch_epoll(poll, timeout)
        if self._timers:
            now = time.monotonic()
            timers = self._timers
            while timers and timers[0].when <= now:
                timer = heapq.heappop(timers)
                if not timer.cancelled:
                    self._call(timer.callback, timer.args)
        # Run only what was queued before this point, so a callback that re-queues itself
        # cannot starve I/O.
        for _ in range(len(self._ready)):
            callback, args = self._ready.popleft()
            self._call(callback, args)

    def _dispatch_epoll(
        self, poll: Callable[[float, int], list[tuple[int, int]]], timeout: float | None
    ) -> None:
        """The epoll fast path (see ``_fast_epoll``): same keys, same masks, fewer objects."""
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        else:
            # epoll counts whole milliseconds (run_once already capped it at MAX_DELAY).
            timeout = min(math.ceil(timeout * 1e3), 2**31 - 1) * 1e-3
        fd_to_key = self._fd_to_key
        if self._release_while_polling:
            # While the thread waits here, run_while_idle() may register or close a socket
            # from another thread (epoll_ctl is thread-safe; a stale event finds no key).
            self._idle_lock.release()
            try:
                ready = poll(timeout, max(len(fd_to_key), 1))
            except InterruptedError:
                ready = []
            finally:
                self._idle_lock.acquire()
        else:
            try:
                ready = poll(timeout, max(len(fd_to_key), 1))
            except InterruptedError:
                ready = []
        self.poll_time = time.monotonic()
        table = _EPOLL_TO_MASK
        size = len(table)
        for fd, event in ready:
            # A subscript, not .get(): no method call per event (try costs nothing in 3.11).
            try:
                key = fd_to_key[fd]
            except KeyError:
                continue  # unregistered by a handler earlier in this batch
            # key[2], key[3]: SelectorKey's events and data.  A namedtuple's fields by name
            # are descriptors CPython 3.11 cannot specialize; by index they are one opcode.
            mask = (table[event] if event < size else _epoll_mask(event)) & key[2]
            if not mask:
                continue
            handler = key[3]
            try:
                handler.handle_event(mask)
            except Exception as exc:  # noqa: BLE001 - recorded, re-raised by check()
                self._handler_failed(handler, exc)

    def _call(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            callback(*args)
        except Exception as exc:  # noqa: BLE001 - recorded, re-raised by check()
            owner = getattr(callback, "__self__", callback)
            self._handler_failed(owner, exc)

    def _handler_failed(self, handler: object, exc: Exception) -> None:
        self.report_error(exc, handler)
        # A handler that raised may raise again on the next event: close it so the loop
        # does not spin on it.  Its owner sees the error through check().
        close = getattr(handler, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc2:  # noqa: BLE001 - the first error is the one reported
                self.report_error(exc2, handler)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Drive the loop in this thread until ``predicate()`` or ``timeout``; True if met
        (the one wait, ``core.wait.wait_loop``, blocking in one loop iteration at a time)."""
        self._thread_ident = threading.get_ident()
        try:
            return wait_loop(predicate, self.run_once, timeout, maximum=math.inf)
        finally:
            self._thread_ident = None

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start the loop thread; return once it is running."""
        check_seconds(timeout, "timeout")
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        if self._closed:
            raise RuntimeError(f"{self.name}: closed; create a new loop")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        # The loop thread is started with SIGINT and SIGTERM blocked (a new thread inherits
        # the mask of the thread that starts it), so those signals always reach the main
        # thread.  Why it matters: POSIX delivers a process-directed signal to any thread that
        # does not block it.  CPython's C handler then only sets a flag and the Python handler
        # (KeyboardInterrupt) runs when the *main* thread next gets to the interpreter loop,
        # so a main thread asleep in ``Event.wait()`` sleeps on when the kernel picked the loop
        # thread (whose ``epoll_wait`` returns EINTR and carries on): Ctrl-C was lost about
        # once in 60 stops of the tutorial's server.  Blocked here, the signal stays pending
        # until a thread that accepts it, the main one, wakes for it.
        if _BLOCK_IN_LOOP_THREADS:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCK_IN_LOOP_THREADS)
            try:
                self._thread.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        else:  # pragma: no cover - Windows: no per-thread signal masks
            self._thread.start()
        if not self._running.wait(timeout):
            raise LoopStuckError(f"loop thread {self.name!r} did not start within {timeout}s")

    def _run(self) -> None:
        self._thread_ident = threading.get_ident()
        self._release_while_polling = self._epoll_poll is not None
        self._running.set()
        try:
            while not self._stop_requested:
                self.run_once(None)
        except BaseException as exc:  # noqa: BLE001 - the loop thread must not die silently
            self.report_error(exc, self)
        finally:
            self._close_all()

    def request_stop(self) -> None:
        """Loop thread: stop once the running callback returns, without joining (from another
        thread: ``call_soon_threadsafe(loop.request_stop)``)."""
        self._stop_requested = True

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop the loop: close every handler, join the thread; raise if it does not stop.

        Called from the loop thread itself (a handler, a timer, an observer callback), it
        cannot join its own thread: it only asks the loop to stop, which happens as soon as the
        running callback returns; a later ``stop()`` from another thread then joins it.
        """
        check_seconds(timeout, "timeout")
        thread = self._thread
        if thread is None:
            self._close_all()
            return
        if thread.ident == threading.get_ident():
            self._stop_requested = True
            return
        self.call_soon_threadsafe(self.request_stop)
        thread.join(timeout)
        if thread.is_alive():
            raise LoopStuckError(
                f"loop thread {self.name!r} did not stop within {timeout}s; a handler is "
                f"blocking it ({self.handler_count()} handlers registered)"
            )

    def close(self) -> None:
        """Close a loop that was driven with ``run_until`` (or never started)."""
        if self._thread is not None:
            self.stop()
        else:
            self._close_all()

    def _close_all(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            for closer in self._closers:
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001 - recorded, re-raised by check()
                    self.report_error(exc, closer)
            for handler in self.handlers():
                try:
                    handler.close()
                except Exception as exc:  # noqa: BLE001 - recorded, re-raised by check()
                    self.report_error(exc, handler)
            # Callbacks queued by the closes (connection_lost and the like) still run.
            for _ in range(len(self._ready)):
                callback, args = self._ready.popleft()
                self._call(callback, args)
            self._closed = True
            self._timers.clear()
            self._ready.clear()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
