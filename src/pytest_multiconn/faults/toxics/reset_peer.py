"""``reset_peer``: the *proxy* resets both ends after a time (toxiproxy ``reset_peer``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.core.loop import Timer
from pytest_multiconn.faults.params import flag, milliseconds, param
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic


class ResetPeerStage(Stage):
    toxic: ResetPeer

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.timer: Timer | None = None

    def start(self) -> None:
        self.stop()
        due = self.started_at + self.toxic.timeout_ms / 1e3
        self.timer = self.pipe.loop.call_at(due, self._fire)

    def feed(self, data: bytes) -> None:
        if not self.toxic.drop:
            self.next.feed(data)
            return
        self.pipe.dropped(len(data))
        self.pipe.note(self, "dropped before the reset", len(data))

    def _fire(self) -> None:
        self.timer = None
        self.pipe.note(self, f"reset after {self.toxic.timeout_ms:g} ms")
        self.pipe.reset_connection(f"reset_peer {self.toxic.timeout_ms:g} ms")

    def updated(self) -> None:
        self.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@TOXICS.register
@dataclass(frozen=True, repr=False)
class ResetPeer(Toxic):
    """The connection is reset (by the proxy: an RST to both ends; by a server: to its
    client) ``timeout_ms`` milliseconds after the toxic starts acting on it, 0 = at once
    (toxiproxy ``reset_peer``).  Bytes of its
    direction pass until then, or with ``drop=True`` are dropped, as toxiproxy's
    ``reset_peer`` drops them: ``ResetPeer(timeout_ms=500, drop=True)`` downstream is "the
    client gets nothing, then an RST".  (A client resetting itself is ``ClientReset``; a
    reset after n bytes is ``LimitData(bytes=n, reset=True)``.)"""

    name = "reset_peer"
    stage_class = ResetPeerStage
    quick: ClassVar[Mapping[str, Any]] = {"timeout_ms": 100}

    timeout_ms: float = param(0.0, milliseconds())
    drop: bool = param(False, flag())
