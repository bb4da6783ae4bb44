"""Test your own HTTP service: the fault-injection suite and a pipelining client against it.

Replace ``start_service`` with however you start yours (a subprocess, a thread); here it is
the standard library's threaded HTTP/1.1 server.  Run: ``pytest examples/test_your_http_service.py``
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_multiconn import MultiConnClient
from pytest_multiconn.exchanges import HTTP
from pytest_multiconn.faults import PartialSend
from pytest_multiconn.suite import check_server


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pipelining applies

    def do_GET(self) -> None:
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.request_queue_size = 128  # type: ignore[misc]  # a burst should not wait on SYNs
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_keeps_every_contract(service: tuple[str, int]) -> None:
    report = check_server(service, HTTP(expect_body=b"hello\n"), seed=1)
    assert report.ok


def test_pipelined_requests_split_into_tiny_sends(service: tuple[str, int]) -> None:
    # A client speaking HTTP/1.1 pipelines 5 requests per connection, 1 to 8 bytes per send.
    # (Faults need exact replies; HTTP replies are parsed by h11, so no faults here.)
    results = MultiConnClient(service, 4, exchange=HTTP(expect_body=b"hello\n"), requests=5,
                              seed=1).run()
    results.check()
    assert PartialSend(max_chunk=8).max_chunk == 8
