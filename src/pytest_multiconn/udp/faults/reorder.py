"""``reorder``: datagrams held in a window and released in a seeded shuffled order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.core.loop import Timer
from pytest_multiconn.faults.params import integer, milliseconds, param
from pytest_multiconn.udp.faults.base import UDP_FAULTS, Datagram, DatagramFault, DatagramStage

# Indices named per transcript entry (a large window would make every line long).
_SHOWN = 32


class ReorderStage(DatagramStage):
    fault: Reorder

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.held: list[Datagram] = []
        self.timer: Timer | None = None

    def act(self, datagram: Datagram) -> None:
        self.held.append(datagram)
        if len(self.held) >= self.fault.window:
            self._release("window full")
        elif self.timer is None:
            # A window that never fills (the sender stopped) is released after ``ms``, so a
            # datagram is late at worst, never lost.
            self.timer = self.pipe.loop.call_later(self.fault.ms / 1e3, self._release, "timer")

    def _release(self, why: str) -> None:
        self._cancel()
        held, self.held = self.held, []
        self.rng.shuffle(held)
        order = ",".join(str(d.index) for d in held[:_SHOWN]) + (
            "..." if len(held) > _SHOWN else "")
        for d in held:
            self.note(d, f"reordered ({why}): released as {order}")
            self.next.feed(d)

    def pending(self) -> int:
        return len(self.held)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def detach(self) -> None:
        self._cancel()
        held, self.held = self.held, []
        for d in held:
            self.next.feed(d)

    def stop(self) -> None:
        self._cancel()
        self.held.clear()


@UDP_FAULTS.register
@dataclass(frozen=True, repr=False)
class Reorder(DatagramFault):
    """Hold datagrams until ``window`` are held, then release them in a seeded shuffled order;
    a window that has not filled ``ms`` milliseconds after its first datagram is released
    (shuffled) then.  With ``probability`` < 1 only the chosen datagrams wait."""

    name = "reorder"
    stage_class = ReorderStage
    quick: ClassVar[Mapping[str, Any]] = {"window": 4}

    window: int = param(4, integer(2, 4096))
    ms: float = param(50.0, milliseconds())
