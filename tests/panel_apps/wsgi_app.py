"""A minimal WSGI app for the real-server panel (gunicorn): 200 ``hello\\n`` to every request.

``GET /spin`` starts a daemon thread running ``while True: pass`` in the worker that served
it (once per worker) and answers ``spinning <pid>``: the panel uses it to show a worker, not
the master, at ~100% of a CPU.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

BODY = b"hello\n"
_spinners: list[threading.Thread] = []


def _spin() -> None:
    while True:
        pass


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = BODY
    if environ.get("PATH_INFO") == "/spin":
        if not _spinners:
            thread = threading.Thread(target=_spin, name="panel-spin", daemon=True)
            thread.start()
            _spinners.append(thread)
        body = b"spinning %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
