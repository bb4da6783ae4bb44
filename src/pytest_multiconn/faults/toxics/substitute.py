"""``substitute``: a regular expression replaced in the stream, across read boundaries.

The boundary rule.  A match may be split over several reads ("COM" then "MIT"), so the
stage holds back the tail of what it was fed, at most ``max_match - 1`` bytes, while a match
could still start there: a byte goes on once every match starting at or before it is decided,
which is once ``max_match`` bytes after that start have arrived (or the stream ended).  So
the output is ``re.sub(pattern, replacement, whole_stream)`` when

* every match is at most ``max_match`` bytes long and the pattern looks no further than
  that from where a match starts (no ``$``, no long lookahead), and no lookbehind reaches
  into bytes already passed on;
* the parts of a match arrive less than ``hold_ms`` apart: a held byte waits at most
  ``hold_ms`` from its own arrival, then the matches starting at or before it are decided
  with what is there and it is passed on (bytes that came later keep waiting, each for its
  own ``hold_ms``, so a match that starts after a false start still gets its full time), and
  a request/response protocol whose message is shorter than ``max_match`` is delayed by at
  most ``hold_ms``, never stalled.

``count`` limits the replacements per direction of one connection (0: no limit); after
the last one, bytes pass straight through.  ``replacement`` is a ``re`` template
(``rb"\\1"`` works).  Each replacement is noted in the transcript.  A replacement of another
length than its match changes the pipe's count of bytes in flight by the difference (through
``PipeAPI.dropped``, negative when bytes were added), so close-after-flush and backpressure
keep counting right.  Nothing random: the rng is unused.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from pytest_multiconn.core.loop import Timer
from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults.params import data, integer, milliseconds, param, regex
from pytest_multiconn.faults.toxics.base import TOXICS, PipeAPI, Stage, Toxic

_SHOWN = 8  # match offsets listed per transcript note (the count is always given)


class SubstituteStage(Stage):
    toxic: Substitute

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.buf = bytearray()
        self.done = 0  # replacements made so far
        self.timer: Timer | None = None
        self.timer_due = 0.0
        self.offset = 0  # stream offset (input side) of buf[0]
        # (stream offset just past a fed chunk, when it arrived), for the held chunks: a byte
        # is decided hold_ms after its own arrival.
        self.arrivals: deque[tuple[int, float]] = deque()
        self.pattern = re.compile(self.toxic.pattern)

    def updated(self) -> None:
        self.pattern = re.compile(self.toxic.pattern)
        self._scan(final=False)

    def _exhausted(self) -> bool:
        return bool(self.toxic.count) and self.done >= self.toxic.count

    def feed(self, data: bytes) -> None:
        if not self.buf and self._exhausted():
            self.next.feed(data)
            return
        self.buf += data
        self.arrivals.append((self.offset + len(self.buf), time.monotonic()))
        self._scan(final=False)

    def feed_eof(self) -> None:
        self._scan(final=True)
        self.next.feed_eof()

    def _expire(self) -> None:
        self.timer = None
        # Bytes that arrived hold_ms ago or more are decided now; later ones keep waiting.
        expired = time.monotonic() - self.toxic.hold_ms / 1e3
        upto = self.offset
        for end, arrived in self.arrivals:
            if arrived > expired:
                break
            upto = end
        self._scan(final=False, expired=upto - self.offset)

    def _scan(self, final: bool, expired: int = 0) -> None:
        buf, toxic = self.buf, self.toxic
        # Matches starting before ``settled`` can no longer change (see the module's rule),
        # nor can those starting in the first ``expired`` bytes, held for hold_ms already.
        settled = len(buf) if final else max(len(buf) - toxic.max_match + 1, expired)
        out: list[bytes] = []
        pos = 0
        made: list[int] = []
        while pos < settled and not self._exhausted():
            m = self.pattern.search(buf, pos)
            if m is None or m.start() >= settled:
                break
            if m.end() == m.start():  # an empty match (a lookaround): step past it
                out.append(bytes(buf[pos : m.start() + 1]))
                pos = m.start() + 1
                continue
            replacement = m.expand(toxic.replacement)
            out.append(bytes(buf[pos : m.start()]))
            out.append(replacement)
            made.append(self.offset + m.start())
            self.pipe.dropped(len(m[0]) - len(replacement))
            self.done += 1
            pos = m.end()
        cut = len(buf) if self._exhausted() else max(pos, settled)
        out.append(bytes(buf[pos:cut]))
        del buf[:cut]
        self.offset += cut
        chunk = b"".join(out)
        if made:
            where = ", ".join(map(str, made[:_SHOWN])) + (", ..." if len(made) > _SHOWN else "")
            self.pipe.note(self, f"replaced {len(made)} match(es) of {toxic.pattern!r} "
                                 f"at offset {where}", len(chunk))
        arrivals = self.arrivals
        while arrivals and arrivals[0][0] <= self.offset:
            arrivals.popleft()  # passed on entirely
        if buf and arrivals:
            # Wake when the oldest held byte has waited hold_ms.
            due = arrivals[0][1] + toxic.hold_ms / 1e3
            if self.timer is None or due != self.timer_due:
                self._cancel()
                self.timer_due = due
                self.timer = self.pipe.loop.call_at(due, self._expire)
        else:
            self._cancel()
        if chunk:
            self.next.feed(chunk)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def detach(self) -> None:
        self._cancel()
        self.arrivals.clear()
        if self.buf:
            held = bytes(self.buf)
            self.buf.clear()
            self.next.feed(held)

    def stop(self) -> None:
        self._cancel()
        self.buf.clear()
        self.arrivals.clear()


@TOXICS.register
@dataclass(frozen=True, repr=False)
class Substitute(Toxic):
    """Replace matches of the regular expression ``pattern`` with ``replacement`` in the
    stream, also across read boundaries (holding back at most ``max_match - 1`` bytes for at
    most ``hold_ms``)."""

    name = "substitute"
    stage_class = SubstituteStage
    quick: ClassVar[Mapping[str, Any]] = {"pattern": b"e", "replacement": b"E"}

    pattern: bytes = param(check=regex())
    replacement: bytes = param(b"", data())
    count: int = param(0, integer(0))
    max_match: int = param(64, integer(1, 1 << 20))
    hold_ms: float = param(20.0, milliseconds())

    def check(self) -> None:
        compiled = re.compile(self.pattern)
        try:
            compiled.sub(self.replacement, b"")  # parses the template: bad \\3 fails here
        except (re.error, IndexError) as exc:
            raise FaultParameterError(
                f"Substitute: replacement {self.replacement!r} is not a valid template for "
                f"{self.pattern!r} ({exc})"
            ) from None
