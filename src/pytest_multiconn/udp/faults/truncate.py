"""``truncate``: datagrams cut short, as a receiver with a too-small buffer sees them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.faults.params import integer, param
from pytest_multiconn.udp.endpoint import MAX_DATAGRAM
from pytest_multiconn.udp.faults.base import UDP_FAULTS, Datagram, DatagramFault, DatagramStage


class TruncateStage(DatagramStage):
    fault: Truncate

    def act(self, datagram: Datagram) -> None:
        keep = self.fault.bytes
        if len(datagram.data) > keep:
            self.note(datagram, f"truncated {len(datagram.data)} -> {keep} B")
            datagram = Datagram(datagram.index, datagram.data[:keep])
        self.next.feed(datagram)


@UDP_FAULTS.register
@dataclass(frozen=True, repr=False)
class Truncate(DatagramFault):
    """Cut each datagram longer than ``bytes`` to its first ``bytes`` bytes (0: empty)."""

    name = "truncate"
    stage_class = TruncateStage
    quick: ClassVar[Mapping[str, Any]] = {"bytes": 8}

    bytes: int = param(check=integer(0, MAX_DATAGRAM))
