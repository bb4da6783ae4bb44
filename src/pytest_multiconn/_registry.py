"""Which servers, proxies and loop threads of ours are alive: the source of the leak checks."""

from __future__ import annotations

import threading
import weakref
from typing import Any

_lock = threading.Lock()
_live: weakref.WeakSet[Any] = weakref.WeakSet()

#: Every thread we start has a name that begins with this.
THREAD_PREFIX = "multiconn-"


def track_server(server: Any) -> None:
    """Note a started server (or proxy); ``untrack_server`` when it stops."""
    with _lock:
        _live.add(server)


def untrack_server(server: Any) -> None:
    with _lock:
        _live.discard(server)


def live_servers() -> list[Any]:
    """Servers and proxies started and not yet stopped."""
    with _lock:
        return list(_live)


def live_threads() -> list[threading.Thread]:
    """Our loop threads that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]
