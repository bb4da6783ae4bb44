"""Servers the suite is judged against, each run as a subprocess (so the GIL of the test does
not slow it): ``python tests/peer_servers.py KIND`` prints ``Listening on (host, port)``.

* ``threaded-http11``: the standard library's ThreadingHTTPServer, HTTP/1.1 keep-alive;
* ``serial-http``: the same handler on the non-threading HTTPServer: one client at a time;
* ``buffering-http``: an asyncio server (h11) that ignores ``pause_writing``: it keeps reading
  from a client that never reads and buffers the replies without bound;
* ``dropping-line``: a threaded line server that takes each ``recv()`` for a whole line and
  drops the rest: requests split into 1-byte sends lose bytes.
"""

from __future__ import annotations

import asyncio
import http.server
import socketserver
import sys
from typing import Any


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class H11Flood(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        import h11

        self.h11 = h11
        self.conn = h11.Connection(h11.SERVER)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        h11 = self.h11
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA or (event is h11.PAUSED and not self._cycle()):
                return
            if isinstance(event, h11.EndOfMessage):
                body = b"hello\n" * 700  # 4 KiB a reply: the pile-up grows fast
                out = self.conn.send(h11.Response(status_code=200, headers=[
                    ("Content-Length", str(len(body)))]))
                out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(out)  # never waits for drain: buffers without bound
                self._cycle()

    def _cycle(self) -> bool:
        h11 = self.h11
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False

    def eof_received(self) -> None:
        return None


class DroppingLine(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            # The bug: one recv() is taken for one line; a line split over recv()s loses bytes.
            if data.endswith(b"\n"):
                self.request.sendall(data)


class ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(kind: str) -> None:
    if kind in ("threaded-http11", "serial-http"):
        cls = http.server.ThreadingHTTPServer if kind == "threaded-http11" else \
            http.server.HTTPServer
        server: Any = cls(("127.0.0.1", 0), Handler)
        print(f"Listening on {server.server_address[:2]!r}", flush=True)
        server.serve_forever()
    elif kind == "dropping-line":
        server = ThreadingTCP(("127.0.0.1", 0), DroppingLine)
        print(f"Listening on {server.server_address[:2]!r}", flush=True)
        server.serve_forever()
    elif kind == "buffering-http":
        async def run() -> None:
            loop = asyncio.get_running_loop()
            srv = await loop.create_server(H11Flood, "127.0.0.1", 0)
            print(f"Listening on {srv.sockets[0].getsockname()[:2]!r}", flush=True)
            await srv.serve_forever()

        asyncio.run(run())
    else:
        raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1])
