"""The one transcript type: a bounded record of what crossed a connection, merging runs.

A :class:`Transcript` is what a connection records into (``in``, ``out``, ``eof-in``,
``connect``...), what a proxied connection's two sides share (``from-client``,
``to-server``... and ``fault`` entries: ``proxy/transcript.py`` names them), and what a UDP
proxy session keeps of what its faults did to which datagram (an entry per action, its
:class:`~pytest_multiconn.udp.FaultAction` as the entry's ``detail``).  Each owner says which
events merge into runs (``merged``), whether a ping-pong of two of them folds into its last
pair of entries (``fold``), and how wide the event column is (``width``); the bound, what is
kept when it is reached (the first entry and the most recent ones), the entries and the text
are the same for all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_multiconn.core.checks import check_count

DEFAULT_TRANSCRIPT_LIMIT = 64

#: A connection's data events: consecutive ones of one kind merge into one entry.
DATA_EVENTS = frozenset({"in", "out"})


@dataclass(frozen=True)
class TranscriptEntry:
    """Consecutive events of one kind, merged: ``count`` of them, ``size`` bytes in all.

    ``detail`` is what the recorder attached to an event that does not merge (a UDP fault's
    :class:`~pytest_multiconn.udp.FaultAction`), else None.
    """

    start: float
    end: float
    direction: str  # "in", "out", "eof-in", "eof-out", "connect", "close", "reset", "note"...
    size: int
    count: int
    note: str = ""
    detail: Any = None

    def format(self, origin: float, width: int = 7, sized: Iterable[str] = DATA_EVENTS) -> str:
        """One line: the time since ``origin``, the event (``width`` wide), the bytes for
        the events in ``sized`` (and how many operations when more than one), the note."""
        what = f"{self.direction:<{width}}"
        if self.size and self.direction in sized:
            times = f" in {self.count} {'op' if self.count == 1 else 'ops'}"
            what += f" {self.size:>8} B{times if self.count > 1 else ''}"
        span = f"{(self.start - origin) * 1e3:8.2f}ms"
        return f"{span} {what}{('  ' + self.note) if self.note else ''}".rstrip()


class Transcript:
    """A bounded record of what crossed one connection, merging runs of the same event.

    Consecutive events in ``merged`` with the same note merge into one entry; with ``fold``,
    an alternating exchange of two of them (reads and writes) merges into its last pair of
    entries.  The first entry and the most recent ones are kept when ``limit`` is reached
    (``dropped`` counts the others); a limit of 0 records nothing.
    """

    __slots__ = ("_entries", "dropped", "fold", "limit", "merged", "origin", "pending", "width")

    def __init__(self, limit: int = DEFAULT_TRANSCRIPT_LIMIT, origin: float | None = None, *,
                 merged: frozenset[str] = DATA_EVENTS, fold: bool = True,
                 width: int = 7) -> None:
        self.limit = check_count(limit, "transcript_limit")
        self.origin = time.monotonic() if origin is None else origin
        self.merged = merged
        self.fold = fold
        self.width = width
        self._entries: list[list[Any]] = []
        self.dropped = 0
        #: Set by an owner that folds events into the last entries lazily (the plain echo
        #: connection's hot path counts a steady ping-pong on itself): called, in the loop
        #: thread, before any entry is added or read, it writes those counts into the entries.
        self.pending: Callable[[], None] | None = None

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0,
               detail: Any = None) -> None:
        """Add an event (``now``: its monotonic time, when the caller already read the clock;
        ``detail``: an object the entry carries, which keeps it from merging)."""
        if self.pending is not None:
            self.pending()
        if self.limit <= 0:
            return
        if not now:
            now = time.monotonic()
        entries = self._entries
        if entries and detail is None and direction in self.merged:
            last = entries[-1]
            if last[2] == direction and last[5] == note and last[6] is None:
                last[1] = now
                last[3] += size
                last[4] += 1
                return
            # Ping-pong (in, out, in, out...) folds into the last pair of entries, so a long
            # exchange costs no allocation per event and stays two lines long.
            if (self.fold and len(entries) > 1 and not note and not last[5]
                    and last[2] in self.merged):
                pair = entries[-2]
                if pair[2] == direction and not pair[5] and pair[6] is None:
                    pair[1] = now
                    pair[3] += size
                    pair[4] += 1
                    return
        if len(entries) >= self.limit:
            # Keep the first entry (how it started) and the most recent ones; with room for
            # one entry only, that one is the most recent.
            del entries[1 if self.limit > 1 else 0]
            self.dropped += 1
        entries.append([now, now, direction, size, 1, note, detail])

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
        lines = [indent + e.format(self.origin, self.width, self.merged)
                 for e in self.entries()]
        if self.dropped:
            lines.insert(1, f"{indent}... {self.dropped} earlier entries dropped ...")
        return "\n".join(lines)

    def view(self, names: Mapping[str, str]) -> TranscriptView:
        """A recorder that writes into this transcript under other event names (a proxied
        connection's side records ``in`` as ``from-client``)."""
        return TranscriptView(self, names)


class TranscriptView(Transcript):
    """What one side of a shared record writes into: its events renamed, then recorded in the
    shared :class:`Transcript` (reading it reads the shared one).  A ``Transcript`` itself,
    so a connection records into it as into its own."""

    __slots__ = ("names", "shared")

    def __init__(self, shared: Transcript, names: Mapping[str, str]) -> None:
        super().__init__(0, shared.origin)
        self.shared = shared
        self.names = names

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0,
               detail: Any = None) -> None:
        self.shared.record(self.names.get(direction, direction), size, note, now, detail)

    def entries(self) -> list[TranscriptEntry]:
        return self.shared.entries()

    def __iter__(self) -> Iterator[TranscriptEntry]:
        return iter(self.shared)

    def __len__(self) -> int:
        return len(self.shared)

    def format(self, indent: str = "  ") -> str:
        return self.shared.format(indent)


__all__ = ["DATA_EVENTS", "DEFAULT_TRANSCRIPT_LIMIT", "Transcript", "TranscriptEntry",
           "TranscriptView"]
