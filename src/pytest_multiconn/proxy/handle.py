"""The handle a test holds on one proxied connection (:class:`ProxiedConnection`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pytest_multiconn.core.blocking import refuse_in_event_loop, to_thread
from pytest_multiconn.core.checks import check_count
from pytest_multiconn.faults.pipeline import Direction, check_direction
from pytest_multiconn.proxy.pair import Pair

T = TypeVar("T")


class RunInLoop(Protocol):
    """The proxy's ``fn()`` in its loop thread (here once it is stopped)."""

    def __call__(self, fn: Callable[[], T], /) -> T: ...


class WaitOn(Protocol):
    """The proxy's one wait: until ``predicate(take())`` holds, ``take`` in the loop thread
    (``show(value)`` goes into the timeout message)."""

    def __call__(self, take: Callable[[], T], predicate: Callable[[T], bool],
                 timeout: float | None, what: str,
                 show: Callable[[T], object] | None = None, /) -> T: ...


def _refuse(call: str) -> None:
    # The twin's name is the call's with an "a" in front: wait_pending -> await_pending.
    refuse_in_event_loop(f"ProxiedConnection.{call}()", f"await conn.a{call}(...)")


class ProxiedConnection:
    """A test's handle on one proxied connection: inspect it, step it, break it.

    Every method is thread-safe (it runs in the proxy's loop thread) and every wait is bounded.
    ``direction`` is "upstream" (client to server) or "downstream" (server to client).
    """

    def __init__(self, pair: Pair, run: RunInLoop, wait: WaitOn) -> None:
        self._pair = pair
        self._run_in_loop = run
        self._wait = wait

    def __repr__(self) -> str:
        return repr(self._pair)

    @property
    def number(self) -> int:
        """1 for the proxy's first connection, 2 for the next..."""
        return self._pair.number

    @property
    def client_address(self) -> Any:
        return self._pair.client.peer

    @property
    def closed(self) -> bool:
        return self._pair.done

    @property
    def end_reason(self) -> str:
        return self._pair.end_reason

    @property
    def transcript(self) -> str:
        """The connection's transcript, formatted (both sides, with fault actions)."""
        return str(self._run(self._pair.transcript.format))

    def entries(self) -> list[Any]:
        """The transcript's entries (:class:`~pytest_multiconn.TranscriptEntry`)."""
        return list(self._run(self._pair.transcript.entries))

    def stats(self) -> dict[str, int]:
        """Bytes read from the client (upstream) and from the server (downstream)."""
        def get() -> dict[str, int]:
            client, server = self._pair.client, self._pair.server
            return {"upstream": client.bytes_in, "downstream": server.bytes_in,
                    "to_server": server.bytes_out, "to_client": client.bytes_out}
        return dict(self._run(get))

    def _run(self, fn: Callable[[], T]) -> T:
        return self._run_in_loop(fn)

    def _directions(self, direction: str) -> tuple[str, ...]:
        return check_direction(direction, allow_both=True)

    # -- step mode ------------------------------------------------------------------------------
    def hold(self, direction: Direction = "both") -> None:
        """Hold the bytes of ``direction`` at the proxy until ``release()``."""
        dirs = self._directions(direction)

        def go() -> None:
            for d in dirs:
                self._pair.pipe(d).hold()
        self._run(go)

    def unhold(self, direction: Direction = "both") -> None:
        """Deliver everything held in ``direction`` and let bytes flow freely again."""
        dirs = self._directions(direction)

        def go() -> None:
            for d in dirs:
                pipe = self._pair.pipes[d]
                if pipe is not None:
                    pipe.unhold()
                    self._pair.maybe_fast_path(d)
        self._run(go)

    def pending(self, direction: Direction = "downstream") -> int:
        """Bytes held at the proxy in ``direction``, waiting for ``release()``."""
        (d,) = check_direction(direction, allow_both=False)

        def get() -> int:
            pipe = self._pair.pipes[d]
            return 0 if pipe is None else len(pipe.held_bytes)
        return int(self._run(get))

    def eof_pending(self, direction: Direction = "downstream") -> bool:
        """True if the sender's end-of-stream is held in ``direction``."""
        (d,) = check_direction(direction, allow_both=False)

        def get() -> bool:
            pipe = self._pair.pipes[d]
            return pipe is not None and pipe.held_eof
        return bool(self._run(get))

    def wait_eof_pending(self, direction: Direction = "downstream",
                         timeout: float | None = None) -> None:
        """Wait until the sender's end-of-stream is held in ``direction``."""
        _refuse("wait_eof_pending")
        (d,) = check_direction(direction, allow_both=False)

        def held() -> bool:
            pipe = self._pair.pipes[d]
            return pipe is not None and pipe.held_eof

        self._wait(held, bool, timeout, f"end-of-stream held {d} on {self!r}")

    def wait_pending(self, n: int, direction: Direction = "downstream",
                     timeout: float | None = None) -> int:
        """Wait until at least ``n`` bytes are held in ``direction``; return how many are."""
        _refuse("wait_pending")
        check_count(n, "n (the bytes to wait for)")
        (d,) = check_direction(direction, allow_both=False)

        def held() -> int:
            pipe = self._pair.pipes[d]
            return 0 if pipe is None else len(pipe.held_bytes)

        return self._wait(held, lambda count: count >= n, timeout,
                          f"{n} bytes held {d} on {self!r}", lambda count: f"{count} bytes held")

    def release(self, n: int, direction: Direction = "downstream",
                timeout: float | None = None) -> None:
        """Deliver exactly ``n`` held bytes of ``direction`` in one write, waiting (bounded)
        for them to arrive at the proxy first."""
        _refuse("release")
        check_count(n, "n (the bytes to release)")
        (d,) = check_direction(direction, allow_both=False)
        self._require_held(d)
        self.wait_pending(n, d, timeout)  # type: ignore[arg-type]

        def go() -> None:
            pipe = self._pair.pipe(d)
            if len(pipe.held_bytes) < n:
                raise RuntimeError(f"{self!r}: only {len(pipe.held_bytes)} bytes held {d}")
            pipe.release(n)
        self._run(go)

    def release_eof(self, direction: Direction = "downstream") -> int:
        """Send end-of-stream to the receiver of ``direction`` now (after the bytes already
        released); bytes still held there are dropped.  Returns how many were dropped."""
        (d,) = check_direction(direction, allow_both=False)
        self._require_held(d)
        return int(self._run(lambda: self._pair.pipe(d).release_eof()))

    def _require_held(self, d: str) -> None:
        def held() -> bool:
            pipe = self._pair.pipes[d]
            return pipe is not None and pipe.held
        if not self._run(held):
            raise RuntimeError(
                f"{self!r} is not held {d}; call hold() on it (or proxy.hold(), or "
                "FaultProxy(..., hold=True)) before releasing bytes step by step"
            )

    # -- ending ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Reset both sides now (each peer sees ECONNRESET)."""
        self._run(lambda: self._pair.reset("reset by the test"))

    def close(self) -> None:
        """Close both sides now, after flushing what they already have to send."""
        self._run(lambda: self._pair.finish("closed by the test"))

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until both sides are closed."""
        _refuse("wait_closed")
        self._wait(lambda: self._pair.done, bool, timeout, f"{self!r} to close")

    # -- awaitable twins (see core/blocking.py) ------------------------------------------------
    async def await_eof_pending(self, direction: Direction = "downstream",
                                timeout: float | None = None) -> None:
        """Awaitable twin of :meth:`wait_eof_pending` (asyncio or trio; needs ``[async]``)."""
        await to_thread(self.wait_eof_pending, direction, timeout)

    async def await_pending(self, n: int, direction: Direction = "downstream",
                            timeout: float | None = None) -> int:
        """Awaitable twin of :meth:`wait_pending`."""
        return await to_thread(self.wait_pending, n, direction, timeout)

    async def arelease(self, n: int, direction: Direction = "downstream",
                       timeout: float | None = None) -> None:
        """Awaitable twin of :meth:`release`."""
        await to_thread(self.release, n, direction, timeout)

    async def await_closed(self, timeout: float | None = None) -> None:
        """Awaitable twin of :meth:`wait_closed`."""
        await to_thread(self.wait_closed, timeout)


__all__ = ["ProxiedConnection", "RunInLoop", "WaitOn"]
