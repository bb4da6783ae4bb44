"""Parameter checks for every fault family, in one place.

A fault's parameters are fields of a frozen dataclass; each field names its check with
:func:`param` (``ms: float = param(0.0, milliseconds())``), and :func:`validate` runs the
checks when the object is made and when :meth:`Fault.replace` makes a changed copy.  A check
gets the fault's name, the parameter's name and the value, and either returns the value
(unchanged: ``Latency(ms=50)`` keeps its int) or raises :class:`FaultParameterError` with a
message naming all three.

Time values are bounded by what the loop can wait for: ``epoll_wait`` takes its timeout as
a C ``int`` of milliseconds, so a timer due more than ``2**31 - 1`` ms (about 24.8 days) away
makes ``select.epoll.poll`` raise ``OverflowError`` and would kill the loop thread.  Such
values (and inf, NaN, negatives, bools and strings) are refused here, where they are given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from pytest_multiconn.core.checks import check_bool, check_count, check_number
from pytest_multiconn.errors import FaultParameterError

#: The longest timer the loop can arm: epoll_wait's timeout is an int of milliseconds.
EPOLL_MAX_MS = 2**31 - 1
EPOLL_MAX_SECONDS = EPOLL_MAX_MS / 1000

_EPOLL_WHY = " (about 24.8 days, the longest timer the loop can wait for)"

#: ``check(fault_name, parameter, value) -> value``: raises FaultParameterError when bad.
Check = Callable[[str, str, object], Any]

_CHECK = "pytest_multiconn.check"


def param(default: Any = dataclasses.MISSING, check: Check | None = None) -> Any:
    """A fault parameter: a dataclass field whose value ``check`` validates.

    (Keyword-only parameters follow a ``_: KW_ONLY`` line, which type checkers understand.)
    """
    return dataclasses.field(default=default, metadata=checked(check))


def checked(check: Check | None) -> dict[str, Check]:
    """Field metadata naming ``check``, for a ``dataclasses.field(...)`` written out."""
    return {} if check is None else {_CHECK: check}


def check_of(f: dataclasses.Field[Any]) -> Check | None:
    """The check a field was declared with (``None``: not checked)."""
    check: Check | None = f.metadata.get(_CHECK)
    return check


def validate(obj: Any, owner: str) -> None:
    """Run every field's check on ``obj`` (a frozen dataclass), storing what it returns."""
    for f in dataclasses.fields(obj):
        check = check_of(f)
        if check is not None:
            value = getattr(obj, f.name)
            checked = check(owner, f.name, value)
            if checked is not value:
                object.__setattr__(obj, f.name, checked)  # frozen: set once, while being made


def fail(owner: str, name: str, value: object, expected: str) -> FaultParameterError:
    """The error for a bad value: ``Latency: ms must be ..., got inf``."""
    return FaultParameterError(f"{owner}: {name} must be {expected}, got {value!r}")


def _real(owner: str, name: str, value: object, expected: str) -> float:
    try:
        return check_number(value, name, above=-math.inf, at_most=math.inf, what=expected)
    except ValueError:
        raise fail(owner, name, value, expected) from None


def number(
    minimum: float = 0.0, maximum: float | None = None, *, unit: str = "", why: str = ""
) -> Check:
    """A finite real number from ``minimum`` to ``maximum`` (ints accepted, bools not)."""
    of = f" of {unit}" if unit else ""
    what = f"a finite number{of} >= {minimum:g}"
    if maximum is not None:
        what = f"a finite number{of} from {minimum:g} to {maximum!r}{why}"

    def check(owner: str, name: str, value: object) -> Any:
        real = _real(owner, name, value, what)
        if real < minimum or (maximum is not None and real > maximum):
            raise fail(owner, name, value, what)
        return value

    return check


def seconds(minimum: float = 0.0) -> Check:
    """A duration in seconds that a loop timer can wait (up to about 24.8 days)."""
    return number(minimum, EPOLL_MAX_SECONDS, unit="seconds", why=_EPOLL_WHY)


def milliseconds(minimum: float = 0.0) -> Check:
    """A duration in milliseconds that a loop timer can wait (up to 2**31 - 1)."""
    return number(minimum, EPOLL_MAX_MS, unit="milliseconds", why=_EPOLL_WHY)


def microseconds() -> Check:
    """A duration in microseconds that a loop timer can wait."""
    return number(0.0, EPOLL_MAX_MS * 1000, unit="microseconds", why=_EPOLL_WHY)


def integer(minimum: int = 1, maximum: int | None = None) -> Check:
    """An ``int`` (not a bool, not a float) from ``minimum`` to ``maximum``."""
    what = f"an integer >= {minimum}" if maximum is None else \
        f"an integer from {minimum} to {maximum}"

    def check(owner: str, name: str, value: object) -> Any:
        try:
            return check_count(value, name, minimum=minimum, maximum=maximum)
        except ValueError:
            raise fail(owner, name, value, what) from None

    return check


def probability() -> Check:
    """A chance from 0 to 1 (toxiproxy's *toxicity*)."""
    return number(0.0, 1)


def flag() -> Check:
    """``True`` or ``False`` (not 0/1, not a string)."""

    def check(owner: str, name: str, value: object) -> Any:
        try:
            return check_bool(value, name)
        except TypeError:
            raise fail(owner, name, value, "True or False") from None

    return check


def choice(*options: object) -> Check:
    """One of ``options``."""
    what = "one of " + ", ".join(map(repr, options))

    def check(owner: str, name: str, value: object) -> Any:
        if isinstance(value, bool) or value not in options:
            raise fail(owner, name, value, what)
        return value

    return check


def optional(inner: Check) -> Check:
    """``None`` or a value that ``inner`` accepts."""

    def check(owner: str, name: str, value: object) -> Any:
        return None if value is None else inner(owner, name, value)

    return check


def offsets() -> Check:
    """Byte offsets: a tuple of distinct ``int`` >= 0 (a tuple, as a frozen fault is
    hashable), stored sorted."""
    what = "a tuple of distinct integers >= 0 (byte offsets)"

    def check(owner: str, name: str, value: object) -> Any:
        if not isinstance(value, tuple):
            raise fail(owner, name, value, what)
        try:
            for item in value:
                check_count(item, name)
        except ValueError:
            raise fail(owner, name, value, what) from None
        if len(set(value)) != len(value):
            raise fail(owner, name, value, what)
        ordered = tuple(sorted(value))
        return value if ordered == value else ordered

    return check


def text() -> Check:
    """A non-empty str (a host name, say)."""

    def check(owner: str, name: str, value: object) -> Any:
        if not isinstance(value, str) or not value:
            raise fail(owner, name, value, "a non-empty string")
        return value

    return check


def data() -> Check:
    """``bytes`` (not a ``str``: the stream is bytes, and an encoding would be a guess)."""

    def check(owner: str, name: str, value: object) -> Any:
        if not isinstance(value, bytes):
            raise fail(owner, name, value, "bytes")
        return value

    return check


def regex() -> Check:
    """A regular expression over bytes (``rb"COMMIT"``); it must compile and must not match
    the empty string (a stage could never move past it)."""
    import re

    def check(owner: str, name: str, value: object) -> Any:
        raw = data()(owner, name, value)
        try:
            compiled = re.compile(raw)
        except re.error as exc:
            raise fail(owner, name, value, f"a valid regular expression ({exc})") from None
        if compiled.fullmatch(b"") is not None:
            raise fail(owner, name, value, "a regular expression that cannot match nothing")
        return raw

    return check
