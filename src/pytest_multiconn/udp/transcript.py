"""A UDP proxy session's transcript: what each fault did to which datagram, bounded.

Datagrams that pass untouched are only counted (per direction: in, out); every fault action
is an entry (``dropped``, ``duplicated: 1 extra copy``, ``corrupted: flipped bit(s) 3,17``),
naming the fault, the direction and the datagram's index, so a failing test's report says
"drop_upstream dropped datagram #4" rather than "something was lost".  The first entries and
the most recent ones are kept when the limit is reached.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass

DEFAULT_LIMIT = 256
_SHORT = {"upstream": "up", "downstream": "down"}


@dataclass(frozen=True, slots=True)
class FaultAction:
    """One thing a fault did to one datagram."""

    when: float
    direction: str
    fault: str
    index: int
    size: int
    action: str

    def format(self, origin: float) -> str:
        where = _SHORT.get(self.direction, self.direction)
        return (f"{(self.when - origin) * 1e3:9.2f}ms {where:<4}"
                f" #{self.index:<5} {self.size:>6} B  {self.fault}: {self.action}")


class DatagramTranscript:
    """A bounded list of :class:`FaultAction` and per-direction counts (loop thread writes)."""

    def __init__(self, limit: int = DEFAULT_LIMIT, origin: float | None = None) -> None:
        self.limit = max(0, limit)
        self.origin = time.monotonic() if origin is None else origin
        self._head: list[FaultAction] = []
        self._tail: deque[FaultAction] = deque(maxlen=max(1, self.limit - self.limit // 4))
        self.cut = 0
        #: Datagrams read and written per direction: ``counts["upstream", "in"]``.
        self.counts: Counter[tuple[str, str]] = Counter()
        #: Fault actions by ``(fault name, first word of the action)``, never cut.
        self.totals: Counter[tuple[str, str]] = Counter()

    def count(self, direction: str, what: str) -> None:
        self.counts[direction, what] += 1

    def record(self, action: FaultAction) -> None:
        self.totals[action.fault, action.action.split(":")[0].split(" ")[0]] += 1
        if self.limit <= 0:
            return
        if len(self._head) < self.limit // 4:
            self._head.append(action)
            return
        if len(self._tail) == self._tail.maxlen:
            self.cut += 1
        self._tail.append(action)

    def actions(self) -> list[FaultAction]:
        """The entries kept, oldest first."""
        return [*self._head, *self._tail]

    def format(self, indent: str = "  ") -> str:
        c = self.counts
        lines = [
            f"{indent}datagrams: up in={c['upstream', 'in']} out={c['upstream', 'out']}, "
            f"down in={c['downstream', 'in']} out={c['downstream', 'out']}"
        ]
        if self.totals:
            lines.append(indent + "faults: " + ", ".join(
                f"{fault} {what} {n}" for (fault, what), n in sorted(self.totals.items())))
        lines.extend(indent + a.format(self.origin) for a in self._head)
        if self.cut:
            lines.append(f"{indent}... {self.cut} entries cut ...")
        lines.extend(indent + a.format(self.origin) for a in self._tail)
        return "\n".join(lines)
