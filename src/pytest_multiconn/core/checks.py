"""Validating the numbers every API takes (durations and counts), where they are given.

Why one module: a timeout that is infinite, NaN, a string or past what ``epoll_wait`` can
take (``2**31 - 1`` milliseconds, about 24.8 days) used to be accepted and then fail deep in
the loop thread, far from the call that gave it.  Every duration goes through
:func:`check_seconds` instead, so the error names the parameter and the value.
"""

from __future__ import annotations

import math

#: The longest delay the loop can wait on in one ``epoll_wait`` (its timeout is a C int of
#: milliseconds).  Timers further out than this are refused rather than silently shortened.
MAX_DELAY = (2**31 - 1) / 1000.0


def check_seconds(
    value: object,
    name: str,
    *,
    allow_zero: bool = False,
    maximum: float = MAX_DELAY,
) -> float:
    """Return ``value`` as a float number of seconds, or raise ``ValueError`` naming ``name``.

    Accepts ints and floats (never bools) that are finite, positive (or zero when
    ``allow_zero``) and at most ``maximum``.  Where "no limit" is meant, the caller's parameter
    takes ``None`` and does not call this.
    """
    bound = "a non-negative" if allow_zero else "a positive"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be {bound} number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(
            f"{name} must be {bound} finite number of seconds, got {value!r} "
            "(for no limit, pass None where the parameter allows it)"
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {bound} number of seconds, got {value!r}")
    if value > maximum:
        raise ValueError(
            f"{name} must be at most {int(maximum)} seconds (about {maximum / 86400:.1f} days, "
            f"the longest wait the selector loop can take), got {value!r}"
        )
    return float(value)


def check_count(value: object, name: str, *, minimum: int = 0) -> int:
    """Return ``value`` as an int >= ``minimum`` (never a bool), or raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
