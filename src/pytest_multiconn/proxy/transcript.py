"""The transcript of a proxied connection: both sides and the faults, in one bounded record.

It is the one :class:`~pytest_multiconn.lowlevel.Transcript` type, configured here: entries
name the side and direction (``from-client``, ``to-server``, ``eof-to-client``,
``server-reset``...), ``fault`` entries say which fault acted, on how many bytes; runs of one
of these merge, and each side's Connection records into a view that renames its own events.
"""

from __future__ import annotations

from pytest_multiconn.core.transcript import Transcript

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
#: The events whose runs merge (and whose bytes a line shows).
MERGED = frozenset({"from-client", "to-client", "from-server", "to-server", "fault"})
#: The widest event name ("eof-from-client"): the event column's width.
WIDTH = 15


def proxy_transcript(limit: int) -> Transcript:
    """The shared record of one proxied connection (no ping-pong folding: four directions)."""
    return Transcript(limit, merged=MERGED, fold=False, width=WIDTH)


__all__ = ["CLIENT_NAMES", "MERGED", "SERVER_NAMES", "WIDTH", "proxy_transcript"]
