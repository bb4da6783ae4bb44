"""Faults that wait for the conversation: :class:`When`, a toxic that arms another one.

``When(ResetPeer(), match=b"COMMIT", before_match=True)`` on the upstream direction passes a
connection's bytes untouched until that connection sends ``COMMIT``, and from there on hands
them to the wrapped toxic, which resets that connection and no other.  The condition is
watched per connection and per direction (each gets its own stage), and it latches: once it
held, the wrapped toxic acts on the rest of that direction of that connection, exactly as if
it had been added at that byte.  The wrapped toxic decides what happens to the bytes from the
trigger on: a ``ResetPeer`` passes them on until its timer fires (at once for 0 ms, but after
the bytes of the chunk that completed the match), a ``Timeout`` drops them.  A condition is met
at a byte, never before the first one: without ``match``, ``after_bytes=0`` arms the toxic
when the direction's first byte arrives (a stream that ends without one never arms it).

Conditions, all optional (none: the wrapped toxic acts from the first byte):

* ``after_bytes=N``: the first N bytes of the direction pass untouched (the direction's
  stream from its first byte, also for a ``When`` added to a live connection);
* ``match``: bytes (a literal) or a compiled ``re.Pattern[bytes]``, searched in the bytes after
  those N, across chunk boundaries (a regex sees the last ``window`` bytes, so a match longer
  than that is not found);
* ``before_match``: the match itself goes to the wrapped toxic (default: it passes, and the
  toxic starts right after it).  For a literal, bytes that may be the start of a match are
  held until the next bytes tell (so ``COM`` then ``MIT`` in two writes never reaches the
  server); a regex cannot be held back that way, so only the part of the match in the chunk
  that completes it goes to the toxic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from random import Random
from typing import Any

from pytest_multiconn.faults.params import checked, fail, flag, integer, param
from pytest_multiconn.faults.toxics import NotApplied, PipeAPI, Stage, Toxic

#: Default bound on the bytes a regex condition looks back over.
DEFAULT_WINDOW = 4096


def _a_toxic(owner: str, name: str, value: object) -> Any:
    if not isinstance(value, Toxic):
        raise fail(owner, name, value, "a toxic such as ResetPeer()")
    return value


def _a_match(owner: str, name: str, value: object) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        if not value:
            raise fail(owner, name, value, "non-empty bytes (empty would match at once)")
        return bytes(value)
    if isinstance(value, re.Pattern) and isinstance(value.pattern, bytes):
        return value
    raise fail(owner, name, value, "bytes or a compiled bytes regex (re.compile(rb'...'))")


@dataclass(frozen=True, repr=False)
class When(Toxic):
    """Arm ``toxic`` for one connection and direction once a condition holds there."""

    name = "when"
    toxic: Toxic = field(metadata=checked(_a_toxic))
    after_bytes: int = param(0, integer(0))
    match: bytes | re.Pattern[bytes] | None = field(default=None, metadata=checked(_a_match))
    before_match: bool = param(False, flag())
    window: int = param(DEFAULT_WINDOW, integer(1))

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        if self.probability < 1.0 and rng.random() >= self.probability:
            return NotApplied(self, "", pipe, rng)
        return _WhenStage(self, "", pipe, rng)


class _ToNext:
    """The wrapped stage's next link: whatever follows the When stage now (it may be relinked
    when other toxics are added or removed)."""

    def __init__(self, owner: Stage) -> None:
        self.owner = owner

    def feed(self, data: bytes) -> None:
        self.owner.next.feed(data)

    def feed_eof(self) -> None:
        self.owner.next.feed_eof()


class _WhenStage(Stage):
    toxic: When

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.seen = 0  # bytes of this direction so far
        self.tail = bytearray()  # recent bytes already passed, for matches across chunks
        self.held = bytearray()  # bytes that may start a literal match (before_match)
        self.inner: Stage | None = None

    def start(self) -> None:
        # Joining a live connection: the bytes that went before count as the stream's.
        self.seen = self.pipe.position()

    def _arm(self, where: str) -> Stage:
        inner = self.toxic.toxic.make_stage(self.pipe, self.rng)
        inner.name = self.name
        inner.next = _ToNext(self)
        self.inner = inner
        self.pipe.note(self, f"condition met {where}: {self.toxic.toxic!r} from here on")
        inner.start()
        return inner

    def feed(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.feed(data)
            return
        t = self.toxic
        if self.seen < t.after_bytes:
            free = min(len(data), t.after_bytes - self.seen)
            self.seen += free
            if free:
                self.next.feed(data[:free])
            data = data[free:]
            if self.seen < t.after_bytes:
                return
            if t.match is None:
                self._arm(f"after {t.after_bytes} B")
                if data:
                    self._inner_feed(data)
                return
        if not data:
            return
        if t.match is None:  # met at this byte: the first one, or one past after_bytes
            self._arm("at the first byte" if not self.seen else f"at byte {self.seen}")
            self._inner_feed(data)
            return
        self._search(data)

    def _inner_feed(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.feed(data)

    def _search(self, data: bytes) -> None:
        t = self.toxic
        match = t.match
        held = bytes(self.held)
        self.held.clear()
        buf = bytes(self.tail) + held + data
        base = len(self.tail)  # buf[base:] is what has not passed yet
        span: tuple[int, int] | None = None
        if isinstance(match, bytes):
            found = buf.find(match)
            if found >= 0:
                span = (found, found + len(match))
        elif match is not None:
            m = match.search(buf)
            if m is not None:
                span = m.span()
        if span is None:
            pending = buf[base:]
            keep = 0
            if t.before_match and isinstance(match, bytes):
                # Hold the longest suffix that could still become the start of a match.
                for k in range(min(len(match) - 1, len(pending)), 0, -1):
                    if pending.endswith(match[:k]):
                        keep = k
                        break
            passed = pending[: len(pending) - keep]
            if passed:
                self.seen += len(passed)
                self.next.feed(passed)
            if keep:
                self.held += pending[len(pending) - keep :]
            self._remember(buf[: len(buf) - keep])
            return
        start, end = span
        cut = max(start if t.before_match else end, base) - base
        pending = buf[base:]
        if cut:
            self.seen += cut
            self.next.feed(pending[:cut])
        self._arm(f"at byte {self.seen} (match {buf[start:end]!r})")
        self.tail.clear()
        if pending[cut:]:
            self._inner_feed(pending[cut:])

    def _remember(self, passed: bytes) -> None:
        match = self.toxic.match
        keep = len(match) - 1 if isinstance(match, bytes) else self.toxic.window
        self.tail = bytearray(passed[-keep:] if keep else b"")

    def feed_eof(self) -> None:
        if self.inner is not None:
            self.inner.feed_eof()
            return
        if self.held:  # the stream ended before the match completed: it was no match
            data, self.held = bytes(self.held), bytearray()
            self.seen += len(data)
            self.next.feed(data)
        self.next.feed_eof()

    def updated(self) -> None:
        if self.inner is not None:
            self.inner.toxic = self.toxic.toxic
            self.inner.updated()

    def detach(self) -> None:
        if self.inner is not None:
            self.inner.detach()
        elif self.held:
            data, self.held = bytes(self.held), bytearray()
            self.next.feed(data)

    def stop(self) -> None:
        if self.inner is not None:
            self.inner.stop()
        self.held.clear()


__all__ = ["When"]
