"""``slow_close``: the end-of-stream held back after the data (toxiproxy ``slow_close``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.faults.params import milliseconds, param
from pytest_multiconn.faults.toxics.base import EOF_MARK, TOXICS, QueueStage, Toxic


class SlowCloseStage(QueueStage):
    toxic: SlowClose

    def feed(self, data: bytes) -> None:
        if self.queue:  # cannot happen (nothing follows end-of-stream), but keep order anyway
            self.push(self.last_due, data)
        else:
            self.next.feed(data)

    def feed_eof(self) -> None:
        self.pipe.note(self, f"end-of-stream held for {self.toxic.delay_ms:g} ms")
        self.push(time.monotonic() + self.toxic.delay_ms / 1e3, EOF_MARK)


@TOXICS.register
@dataclass(frozen=True, repr=False)
class SlowClose(Toxic):
    """Hold end-of-stream back for ``delay_ms`` milliseconds after the data before it
    (toxiproxy ``slow_close``)."""

    name = "slow_close"
    stage_class = SlowCloseStage
    quick: ClassVar[Mapping[str, Any]] = {"delay_ms": 50}

    delay_ms: float = param(0.0, milliseconds())
