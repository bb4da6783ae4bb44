"""``truncate``: each piece of the stream cut to its first bytes; the connection stays open.

Unlike ``limit_data`` (the *stream* after n bytes, then the connection closes), ``truncate``
cuts every *piece* it is fed to its first ``bytes`` bytes and drops the rest of that piece,
and goes on with the next piece.  A piece is one read by the proxy (on loopback, what the
sender wrote in one ``send`` and the proxy had not yet read: for a request/response server,
one reply, which is why the default direction of a proxy fault, downstream, makes it "cut
every reply"), or one piece of the toxic before it (a ``slicer``, a ``coalesce``).
``every`` cuts only every n-th piece (1: all).  Nothing random: the rng is unused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.faults.params import integer, param
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic


class TruncateStage(Stage):
    toxic: Truncate

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.pieces = 0

    def feed(self, data: bytes) -> None:
        self.pieces += 1
        keep = self.toxic.bytes
        if len(data) <= keep or self.pieces % self.toxic.every:
            self.next.feed(data)
            return
        cut = len(data) - keep
        self.pipe.dropped(cut)
        self.pipe.note(self, f"piece {self.pieces} cut to {keep} B, dropped {cut} B", len(data))
        if keep:
            self.next.feed(data[:keep])


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Truncate(Toxic):
    """Cut every piece of the stream (one read: one reply of a request/response server) to
    its first ``bytes`` bytes, dropping the rest; the connection stays open."""

    name = "truncate"
    stage_class = TruncateStage
    quick: ClassVar[Mapping[str, Any]] = {"bytes": 4}

    bytes: int = param(check=integer(0))  # no default: how much to keep is the point
    every: int = param(1, integer(1))
