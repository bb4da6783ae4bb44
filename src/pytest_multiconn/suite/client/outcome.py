"""What one call of the user's client did: returned a value, raised, or was still running
when the suite stopped waiting (abandoned); and how each is told in a row's detail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RETURNED, RAISED, HUNG = "returned", "raised", "hung"


@dataclass(frozen=True)
class Outcome:
    kind: str
    seconds: float
    value: Any = None
    error: BaseException | None = None

    @property
    def returned(self) -> bool:
        return self.kind == RETURNED

    @property
    def raised(self) -> bool:
        return self.kind == RAISED

    @property
    def hung(self) -> bool:
        return self.kind == HUNG

    def what(self) -> str:
        """``returned 3``, ``raised TimeoutError('...')``, ``still running (abandoned)``."""
        if self.kind == RETURNED:
            return f"returned {short(self.value)}"
        if self.kind == RAISED:
            return f"raised {type(self.error).__name__}({short(str(self.error), 80)})"
        return "was still running (abandoned)"

    def told(self) -> str:
        """The outcome with its time: ``raised TimeoutError(...) after 0.51 s``."""
        return f"{self.what()} after {self.seconds:.2f} s"


def short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def matches(expect: Any, value: Any) -> bool:
    """Whether ``value`` is the right result: ``expect(value)`` is true for a predicate,
    else ``value == expect``."""
    if callable(expect) and not isinstance(expect, type):
        try:
            return bool(expect(value))
        except Exception:  # noqa: BLE001 - a predicate that cannot judge the value says no
            return False
    return bool(value == expect)


def describe_expect(expect: Any) -> str:
    if callable(expect) and not isinstance(expect, type):
        name = getattr(expect, "__name__", None) or type(expect).__name__
        return f"a value that {name}() accepts"
    return short(expect)


Call = Callable[[Any], Any]

__all__ = ["HUNG", "RAISED", "RETURNED", "Outcome", "describe_expect", "matches", "short"]
