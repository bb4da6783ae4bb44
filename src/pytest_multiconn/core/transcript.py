"""A connection's transcript: a bounded record of what crossed it, merging runs of one event."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_TRANSCRIPT_LIMIT = 64


@dataclass(frozen=True)
class TranscriptEntry:
    """Consecutive events of one kind, merged: ``count`` of them, ``size`` bytes in all."""

    start: float
    end: float
    direction: str  # "in", "out", "eof-in", "eof-out", "connect", "close", "reset", "note"
    size: int
    count: int
    note: str = ""

    def format(self, origin: float) -> str:
        span = f"{(self.start - origin) * 1e3:8.2f}ms"
        what = f"{self.direction:<7}"
        if self.direction in ("in", "out"):
            times = f" in {self.count} {'op' if self.count == 1 else 'ops'}"
            what += f" {self.size:>8} B{times if self.count > 1 else ''}"
        return f"{span} {what}{('  ' + self.note) if self.note else ''}".rstrip()


_DATA = ("in", "out")


class Transcript:
    """A bounded record of what crossed one connection, merging runs of the same event.

    Consecutive reads (or writes) merge into one entry; an alternating exchange of reads and
    writes merges into its last pair of entries.  The first entry and the most recent ones are
    kept when the limit is reached.
    """

    __slots__ = ("_entries", "dropped", "limit", "origin", "pending")

    def __init__(self, limit: int = DEFAULT_TRANSCRIPT_LIMIT, origin: float | None = None) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(
                f"transcript_limit must be an integer >= 0 (0 records nothing), got {limit!r}"
            )
        self.limit = limit
        self.origin = time.monotonic() if origin is None else origin
        self._entries: list[list[Any]] = []
        self.dropped = 0
        #: Set by an owner that folds events into the last entries lazily (the plain echo
        #: connection's hot path counts a steady ping-pong on itself): called, in the loop
        #: thread, before any entry is added or read, it writes those counts into the entries.
        self.pending: Callable[[], None] | None = None

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0) -> None:
        """Add an event (``now``: its monotonic time, when the caller already read the clock)."""
        if self.pending is not None:
            self.pending()
        if self.limit <= 0:
            return
        if not now:
            now = time.monotonic()
        entries = self._entries
        if entries and (direction == "in" or direction == "out"):  # noqa: PLR1714 - hot path
            last = entries[-1]
            if last[2] == direction and last[5] == note:
                last[1] = now
                last[3] += size
                last[4] += 1
                return
            # Ping-pong (in, out, in, out...) folds into the last pair of entries, so a long
            # exchange costs no allocation per event and stays two lines long.
            if len(entries) > 1 and not note and not last[5] and last[2] in _DATA:
                pair = entries[-2]
                if pair[2] == direction and not pair[5]:
                    pair[1] = now
                    pair[3] += size
                    pair[4] += 1
                    return
        if len(entries) >= self.limit:
            # Keep the first entry (how it started) and the most recent ones; with room for
            # one entry only, that one is the most recent.
            del entries[1 if self.limit > 1 else 0]
            self.dropped += 1
        entries.append([now, now, direction, size, 1, note])

    def folding_pair(self) -> tuple[list[Any], list[Any]] | None:
        """The last two raw entries when they are a plain "in" then a plain "out": a steady
        ping-pong the echo fast path counts into them itself (with ``pending`` set)."""
        entries = self._entries
        if len(entries) > 1:
            pair, last = entries[-2], entries[-1]
            if pair[2] == "in" and last[2] == "out" and not pair[5] and not last[5]:
                return pair, last
        return None

    def entries(self) -> list[TranscriptEntry]:
        if self.pending is not None:
            self.pending()
        return [TranscriptEntry(*e) for e in self._entries]

    def __iter__(self) -> Iterator[TranscriptEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        if self.pending is not None:
            self.pending()
        return len(self._entries)

    def format(self, indent: str = "  ") -> str:
        lines = [indent + e.format(self.origin) for e in self.entries()]
        if self.dropped:
            lines.insert(1, f"{indent}... {self.dropped} earlier entries dropped ...")
        return "\n".join(lines)
