"""``drop``: datagrams lost on the way, each with chance ``probability``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.udp.faults.base import UDP_FAULTS, Datagram, DatagramFault, DatagramStage


class DropStage(DatagramStage):
    def act(self, datagram: Datagram) -> None:
        self.note(datagram, "dropped")


@UDP_FAULTS.register
@dataclass(frozen=True, repr=False)
class Drop(DatagramFault):
    """Drop each datagram with chance ``probability`` (1 = every datagram)."""

    name = "drop"
    stage_class = DropStage
    quick: ClassVar[Mapping[str, Any]] = {"probability": 0.5}
