"""The one bounded wait: every wait in the package runs :func:`wait_loop`.

A wait looks at a condition, and while it does not hold and time is left, blocks until
something may have changed.  What differs is only how it blocks:

* a loop-thread service (``LoopService._wait_until``: servers, proxies) sleeps on a condition
  variable that its loop notifies on each change, so it wakes at once and costs no CPU;
* a loop driven in the caller's thread (``Loop.run_until``: clients) runs one loop iteration;
* :func:`wait_until`, for a user's predicate on state that nothing notifies about (a file, a
  process, a counter of a third-party server), can only poll: it sleeps with a backoff.

One place for the deadline, the ``timeout`` check and the loop, so they agree on what a
timeout of 0 means (look once), on what is refused (negative, NaN, inf, bool: ``ValueError``
naming the parameter) and on the message that names what was awaited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pytest_multiconn.core.checks import check_seconds
from pytest_multiconn.errors import WaitTimeout

T = TypeVar("T")

#: Default bound, in seconds, on every wait that crosses threads.
DEFAULT_TIMEOUT = 10.0

#: wait_until's poll interval: it starts short and doubles up to the longest.
_FIRST_POLL = 0.0001
_LONGEST_POLL = 0.01


def wait_loop(
    poll: Callable[[], bool],
    block: Callable[[float], object],
    timeout: float,
    *,
    name: str = "timeout",
    maximum: float | None = None,
) -> bool:
    """Call ``poll()`` until it returns True, and ``block(remaining)`` between two calls
    (it returns when something may have changed, or after ``remaining`` seconds at most).

    True once ``poll()`` held; False when ``timeout`` seconds ran out first (the caller says
    what it waited for).  ``poll()`` always runs at least once, also with ``timeout=0``.
    """
    if maximum is None:
        check_seconds(timeout, name, allow_zero=True)
    else:
        check_seconds(timeout, name, allow_zero=True, maximum=maximum)
    deadline = time.monotonic() + timeout
    while not poll():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        block(remaining)
    return True


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "a condition",
    *,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate()`` until it returns something truthy and return that.

    The poll interval starts at 0.1 ms and doubles up to 10 ms, so a condition that holds soon
    costs almost nothing and a slow one costs little CPU.  After ``timeout`` seconds it raises
    :class:`WaitTimeout` naming ``what`` and, if given, ``describe()`` (the state to debug).
    Prefer an event (``server.wait_for(...)``) where one exists; this is for everything else.
    """
    value: T | None = None
    delay = _FIRST_POLL
    pause = threading.Event()  # never set: a wait with a timeout that no signal cuts short

    def poll() -> bool:
        nonlocal value
        value = predicate()
        return bool(value)

    def backoff(remaining: float) -> None:
        nonlocal delay
        pause.wait(min(delay, remaining))
        delay = min(delay * 2, _LONGEST_POLL)

    if wait_loop(poll, backoff, timeout):
        return value  # type: ignore[return-value]  # poll() found it truthy
    state = f"\nstate: {describe()}" if describe is not None else ""
    raise WaitTimeout(f"timed out after {timeout}s waiting for {what}{state}")
