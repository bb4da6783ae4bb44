"""``limit_data``: the first n bytes pass, then the connection closes (toxiproxy
``limit_data``), or with ``reset=True`` is reset.

On a server's downstream this is also the listener fault "accept, then close at once":
``LimitData(bytes=0)`` closes each connection as it is accepted, before a byte is read or
sent, and ``LimitData(bytes=0, reset=True)`` resets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.faults.params import flag, integer, param
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic


class LimitDataStage(Stage):
    toxic: LimitData

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.passed = 0
        self.reached = False

    def start(self) -> None:
        self._check()

    def _check(self) -> None:
        if not self.reached and self.passed >= self.toxic.bytes:
            self.reached = True
            how = "resetting" if self.toxic.reset else "closing"
            self.pipe.note(self, f"limit of {self.toxic.bytes} B reached: {how}")
            self.pipe.close_after_flush(f"limit_data {self.toxic.bytes} B",
                                        reset=self.toxic.reset)

    def feed(self, data: bytes) -> None:
        room = self.toxic.bytes - self.passed
        if room <= 0 or self.reached:
            self.pipe.dropped(len(data))
            self.pipe.note(self, "dropped", len(data))
            return
        if len(data) > room:
            self.pipe.dropped(len(data) - room)
            self.pipe.note(self, "dropped", len(data) - room)
            data = data[:room]
        self.passed += len(data)
        self.next.feed(data)
        self._check()

    def feed_eof(self) -> None:
        if self.reached and self.toxic.reset:
            return  # the RST follows the bytes: a FIN before it would end the stream cleanly
        # Passed on even past the limit: the pipe closes the connection only once nothing is
        # in flight, and an end-of-stream swallowed here would stay "in flight" for ever (the
        # sender's EOF came in, none went out).  Behind a Latency stage the EOF arrives after
        # the limit was reached, so swallowing it hung the connection.
        self.next.feed_eof()

    def updated(self) -> None:
        self._check()


@TOXICS.register
@dataclass(frozen=True, repr=False)
class LimitData(Toxic):
    """Pass the first ``bytes`` bytes, drop the rest and close the connection once they are
    delivered (toxiproxy ``limit_data``); ``reset=True`` resets it instead (an RST right
    after those bytes, no FIN: the peer reads them, then ``ConnectionResetError``).

    ``LimitData(bytes=0)`` on a server closes every connection as soon as it is accepted (the
    client's ``connect()`` succeeds, then it reads end-of-file); with ``reset=True`` the
    client sees ``ConnectionResetError``, on ``connect()`` itself or on its first read."""

    name = "limit_data"
    stage_class = LimitDataStage
    quick: ClassVar[Mapping[str, Any]] = {"bytes": 100}

    bytes: int = param(0, integer(0))
    reset: bool = param(False, flag())
