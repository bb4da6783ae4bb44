"""Validating the numbers every API takes (durations and counts), where they are given.

Why one module: a timeout that is infinite, NaN, a string or past what ``epoll_wait`` can
take (``2**31 - 1`` milliseconds, about 24.8 days) used to be accepted and then fail deep in
the loop thread, far from the call that gave it.  Every duration goes through
:func:`check_seconds` instead, so the error names the parameter and the value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any, Literal, overload

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


def check_number(
    value: object, name: str, *, above: float, at_most: float, what: str
) -> float:
    """Return ``value`` as a float in ``(above, at_most]`` (finite; never a bool), or raise
    ``ValueError`` naming ``name``, what it must be (``what``) and the value."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not above < value <= at_most
    ):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


#: The largest value a C ``int`` argument takes (``listen()``'s backlog, say).
MAX_C_INT = 2**31 - 1


def check_count(
    value: object, name: str, *, minimum: int = 0, maximum: int | None = None
) -> int:
    """Return ``value`` as an int >= ``minimum`` (and <= ``maximum`` when given; never a
    bool), or raise ``ValueError`` naming ``name`` and the value."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return value


#: The largest seed: ``random.Random`` takes any int, but a seed is shown and typed back
#: (``--multiconn-seed N``), so it stays within 64 bits, as ``derive_seed`` makes them.
MAX_SEED = 2**64 - 1


@overload
def check_seed(value: object, name: str = ..., *, optional: Literal[False] = ...) -> int: ...
@overload
def check_seed(value: object, name: str = ..., *, optional: bool) -> int | None: ...
def check_seed(value: object, name: str = "seed", *, optional: bool = False) -> int | None:
    """Return ``value`` as a seed (an int from 0 to 2**64 - 1, never a bool), or raise
    ``ValueError`` naming ``name`` and the value.  With ``optional``, ``None`` (meaning "the
    run seed") is returned as is.  The one seed check: every API that takes a seed calls it."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        also = " or None (the run seed)" if optional else ""
        raise ValueError(
            f"{name} must be an integer from 0 to 2**64 - 1{also}, got {value!r}"
        )
    return value


def check_fraction(value: object, name: str) -> float:
    """Return ``value`` as a float from 0 to 1 (a probability; never a bool, NaN or a
    string), or raise ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a bool, else raise ``TypeError`` naming ``name``: a flag
    given as ``"no"`` or ``0`` is a mistake to report, not a truth value to guess."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


#: A single one of these is itself iterable (characters, ints), so it is never taken for a
#: collection of items: ``hosts="localhost"`` is not nine one-letter hosts.
_SCALARS = (str, bytes, bytearray, memoryview)


def check_items(value: object, name: str, item_types: type | tuple[type, ...],
                what: str) -> tuple[Any, ...]:
    """Return the items of the iterable ``value`` as a tuple, each an instance of
    ``item_types`` (``what`` names them), or raise ``TypeError`` naming ``name``.  A single
    str or bytes is refused, not split into characters or ints."""
    if isinstance(value, _SCALARS) or not isinstance(value, Iterable):
        raise TypeError(
            f"{name} must be an iterable of {what} (a list or a tuple), got {value!r}"
        )
    items = tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, item_types):
            raise TypeError(f"{name}[{i}] must be {what}, got {item!r}")
    return items


def check_instance(value: object, name: str, types: type | tuple[type, ...], what: str) -> Any:
    """Return ``value`` if it is an instance of ``types``, else raise ``TypeError`` naming
    ``name``, what it must be (``what``) and the value."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    return value


def check_path(value: object, name: str) -> str:
    """Return ``value`` (a str or ``os.PathLike``) as a non-empty str path, or raise."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {value!r}")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return path
