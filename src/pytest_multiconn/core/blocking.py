"""Blocking calls and their awaitable twins.

Every call of ours that waits for a peer (a client run, a ``wait_for_*``, a proxy's step-mode
wait, the suite) blocks the calling thread.  Called from a coroutine, that thread is the one
running the event loop, and if the peer under test lives on that loop (an asyncio or trio server
in the same test) the wait can only time out and then blame the peer.  So such a call made from a
thread whose event loop is running raises :class:`~pytest_multiconn.errors.BlockingCallError` at
once, naming its awaitable twin: the same name with an ``a`` prefix (``run`` -> ``arun``,
``wait_for_closed`` -> ``await_for_closed``), which runs the blocking call in a worker thread
through anyio, so it works on asyncio and on trio alike (install ``pytest-multiconn[async]``).

Why a worker thread rather than native waits: the state we wait on lives in our own loop thread
and changes there; a thread that blocks on our condition variable costs nothing while it waits,
and ``anyio.to_thread.run_sync`` is the one primitive both event loops share.  Every wait is
bounded by its own timeout, so a cancelled twin's thread ends by itself.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pytest_multiconn.errors import BlockingCallError, MissingExtraError

T = TypeVar("T")


def running_event_loop() -> str | None:
    """The name of the event loop running in this thread (``"asyncio"``, ``"trio"``), or None."""
    # asyncio's running loop is per thread; get_running_loop() raises outside one.  Only
    # asked if the program imported asyncio (none can run otherwise): importing it costs a
    # program that never uses it 10-15 ms, on the first server it starts (issue 25).
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return "asyncio"
    trio = sys.modules.get("trio")  # only ask trio if the program imported it
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return "trio"
    return None


def refuse_in_event_loop(call: str, twin: str) -> None:
    """Raise :class:`BlockingCallError` if this thread is running an event loop.

    ``call`` is how the user wrote the blocking call (``"MultiConnClient.run()"``) and ``twin``
    the awaitable to use instead (``"await client.arun()"``).
    """
    loop = running_event_loop()
    if loop is None:
        return
    raise BlockingCallError(
        f"{call} blocks, and it was called from a running {loop} event loop: a peer on that "
        f"loop could not make progress while it waits. Use {twin} instead (needs "
        f"pytest-multiconn[async]), or run the call in a worker thread."
    )


def _anyio() -> Any:
    try:
        import anyio.to_thread
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise MissingExtraError(
            "the awaitable twins need anyio: pip install 'pytest-multiconn[async]'"
        ) from exc
    return anyio


async def to_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the blocking ``fn(*args, **kwargs)`` in a worker thread; works on asyncio and trio.

    A cancelled caller does not wait for the thread: every blocking call of ours is bounded by
    its own timeout, so the thread ends by itself.
    """
    anyio = _anyio()
    call = functools.partial(fn, *args, **kwargs)
    result: T = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    return result
