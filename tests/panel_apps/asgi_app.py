"""A minimal ASGI app for the real-server panel (uvicorn, hypercorn): 200 ``hello\\n`` to every
HTTP request."""

from __future__ import annotations

from typing import Any

BODY = b"hello\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:  # drain the request body (GETs have none)
        message = await receive()
        if not message.get("more_body"):
            break
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))],
    })
    await send({"type": "http.response.body", "body": BODY})
