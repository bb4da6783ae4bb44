"""``duplicate``: a datagram delivered more than once, as a misbehaving network may."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.faults.params import integer, param
from pytest_multiconn.udp.faults.base import UDP_FAULTS, Datagram, DatagramFault, DatagramStage


class DuplicateStage(DatagramStage):
    fault: Duplicate

    def act(self, datagram: Datagram) -> None:
        copies = self.fault.copies
        self.note(datagram, f"duplicated: {copies} extra {'copy' if copies == 1 else 'copies'}")
        for _ in range(1 + copies):
            self.next.feed(datagram)


@UDP_FAULTS.register
@dataclass(frozen=True, repr=False)
class Duplicate(DatagramFault):
    """Deliver each datagram ``copies`` extra times, exact copies, one after the other."""

    name = "duplicate"
    stage_class = DuplicateStage
    quick: ClassVar[Mapping[str, Any]] = {"copies": 1}

    copies: int = param(1, integer(1, 64))
