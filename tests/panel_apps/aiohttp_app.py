"""A minimal aiohttp server for the real-server panel: ``python aiohttp_app.py HOST PORT``
answers 200 ``hello\\n`` to ``GET /``."""

from __future__ import annotations

import sys

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=b"hello\n", content_type="text/plain")


def main() -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), print=None, access_log=None)


if __name__ == "__main__":
    main()
