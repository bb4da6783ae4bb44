"""The transcript of a proxied connection: both sides and the faults, in one bounded record."""

from __future__ import annotations

import time
from typing import Any

from pytest_multiconn.core.connection import Transcript

# Transcript labels: (client side, server side) names for Connection's own event names.
CLIENT_NAMES = {
    "in": "from-client", "out": "to-client", "eof-in": "eof-from-client",
    "eof-out": "eof-to-client", "connect": "client-connect", "close": "client-close",
    "reset": "client-reset", "note": "client-note",
}
SERVER_NAMES = {
    "in": "from-server", "out": "to-server", "eof-in": "eof-from-server",
    "eof-out": "eof-to-server", "connect": "server-connect", "close": "server-close",
    "reset": "server-reset", "note": "server-note",
}
_MERGED = frozenset({"from-client", "to-client", "from-server", "to-server", "fault"})


class ProxyTranscript(Transcript):
    """One bounded transcript for both sides of a proxied connection.

    Entries name the side and direction (``from-client``, ``to-server``, ``eof-to-client``,
    ``server-reset``...); ``fault`` entries say which fault acted, on how many bytes.
    """

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0) -> None:
        if self.limit <= 0:
            return
        if not now:
            now = time.monotonic()
        entries = self._entries
        if entries and direction in _MERGED:
            last = entries[-1]
            if last[2] == direction and last[5] == note:
                last[1] = now
                last[3] += size
                last[4] += 1
                return
        if len(entries) >= self.limit:
            # Keep the first entry (how it started) and the most recent ones; a limit of one
            # keeps only the most recent, since there is no room for both.
            del entries[1 if self.limit > 1 else 0]
            self.dropped += 1
        entries.append([now, now, direction, size, 1, note])

    def format(self, indent: str = "  ") -> str:
        lines = []
        for start, _end, direction, size, count, note in self._entries:
            line = f"{indent}{(start - self.origin) * 1e3:9.2f}ms {direction:<15}"
            if direction in _MERGED and (size or direction != "fault"):
                line += f" {size:>8} B" + (f" in {count} ops" if count > 1 else "")
            lines.append(f"{line}  {note}".rstrip())
        if self.dropped:
            lines.insert(min(1, len(lines)),
                         f"{indent}... {self.dropped} earlier entries dropped ...")
        return "\n".join(lines)


class SideTranscript(Transcript):
    """What one side's Connection records into, renamed and forwarded to the shared one."""

    def __init__(self, shared: ProxyTranscript, names: dict[str, str]) -> None:
        super().__init__(0, shared.origin)
        self.shared = shared
        self.names = names

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0) -> None:
        self.shared.record(self.names.get(direction, direction), size, note, now)

    def entries(self) -> Any:
        return self.shared.entries()

    def __iter__(self) -> Any:
        return iter(self.shared)

    def __len__(self) -> int:
        return len(self.shared)

    def format(self, indent: str = "  ") -> str:
        return self.shared.format(indent)


__all__ = ["CLIENT_NAMES", "SERVER_NAMES", "ProxyTranscript", "SideTranscript"]
