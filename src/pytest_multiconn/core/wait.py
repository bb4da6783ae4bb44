"""A bounded wait on any condition, for state that no event signals."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pytest_multiconn.core.checks import check_seconds
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT
from pytest_multiconn.errors import WaitTimeout

T = TypeVar("T")


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
    check_seconds(timeout, "timeout", allow_zero=True)
    deadline = time.monotonic() + timeout
    delay = 0.0001
    pause = threading.Event()  # never set: a wait with a timeout that no signal cuts short
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            state = f"\nstate: {describe()}" if describe is not None else ""
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}{state}")
        pause.wait(min(delay, remaining))
        delay = min(delay * 2, 0.01)
