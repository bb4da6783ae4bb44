"""``corrupt``: seeded bit flips, a fixed number per datagram or at a rate per bit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.faults.params import fail, integer, number, optional, param
from pytest_multiconn.udp.faults.base import UDP_FAULTS, Datagram, DatagramFault, DatagramStage

# Bit offsets named per transcript entry (a rate on a large datagram flips many).
_SHOWN = 16


def flipped_bits(fault: Corrupt, rng: Random, size: int) -> list[int]:
    """The bit offsets (0 = the first byte's most significant bit) ``fault`` flips in a
    datagram of ``size`` bytes, drawn from ``rng`` exactly as its stage draws them: tests
    predict a corruption with it."""
    bits = size * 8
    if fault.flips is not None:
        return sorted(rng.sample(range(bits), min(fault.flips, bits)))
    rate = fault.rate or 0.0
    return [bit for bit in range(bits) if rng.random() < rate]


def flip(data: bytes, bits: list[int]) -> bytes:
    """``data`` with each bit offset in ``bits`` inverted."""
    out = bytearray(data)
    for bit in bits:
        out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


class CorruptStage(DatagramStage):
    fault: Corrupt

    def act(self, datagram: Datagram) -> None:
        bits = flipped_bits(self.fault, self.rng, len(datagram.data))
        if bits:
            shown = ",".join(map(str, bits[:_SHOWN])) + ("..." if len(bits) > _SHOWN else "")
            self.note(datagram, f"corrupted: flipped bit(s) {shown}")
            datagram = Datagram(datagram.index, flip(datagram.data, bits))
        self.next.feed(datagram)


@UDP_FAULTS.register
@dataclass(frozen=True, repr=False)
class Corrupt(DatagramFault):
    """Flip bits of each datagram: exactly ``flips`` distinct bits (all of them in a shorter
    datagram), or each bit with chance ``rate``; give one of the two."""

    name = "corrupt"
    stage_class = CorruptStage
    quick: ClassVar[Mapping[str, Any]] = {"flips": 1}

    flips: int | None = param(None, optional(integer(1, 8 * 65507)))
    rate: float | None = param(None, optional(number(0.0, 1)))

    def check(self) -> None:
        if (self.flips is None) == (self.rate is None):
            raise fail("Corrupt", "flips/rate", (self.flips, self.rate),
                       "exactly one of flips= (bits per datagram) and rate= (chance per bit)")
