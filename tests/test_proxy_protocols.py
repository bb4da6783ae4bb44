"""Protocols we did not write, through the proxy: http.server + urllib; and the CLI."""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import WAIT, connect, recv_exactly
from pytest_multiconn.cli.proxy import parse_fault
from pytest_multiconn.proxy import Latency, LimitData, ResetPeer, Slicer

BODY = b"<html>" + b"0123456789" * 500 + b"</html>"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = WAIT  # bounds every handler thread, so closing the server joins them

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    """Joins its handler threads on close, and keeps handler errors instead of printing them.

    Faults make handlers fail on purpose (a reset mid-response); printed from a handler thread,
    that traceback would land in whichever test captures stderr next.
    """

    daemon_threads = False
    block_on_close = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.errors: list[BaseException | None] = []

    def handle_error(self, request: object, client_address: object) -> None:
        self.errors.append(sys.exc_info()[1])


@pytest.fixture
def http_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = _QuietHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def _get(proxy_address: tuple[str, int]) -> bytes:
    url = f"http://{proxy_address[0]}:{proxy_address[1]}/page"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return bytes(response.read())


def test_http_through_the_proxy_unchanged(http_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(http_server.server_address)
    for _ in range(3):
        assert _get(proxy.address) == BODY


def test_http_survives_slicing(http_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(http_server.server_address)
    proxy.add(Slicer(average_size=7, size_variation=5), direction="both")
    assert _get(proxy.address) == BODY


def test_http_truncated_by_limit_data(http_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(http_server.server_address)
    proxy.add(LimitData(bytes=300), direction="downstream")
    with pytest.raises(http.client.IncompleteRead) as info:
        _get(proxy.address)
    assert len(info.value.partial) < len(BODY)


def test_http_status_line_cut_by_limit_data(http_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(http_server.server_address)
    proxy.add(LimitData(bytes=10), direction="downstream")
    with pytest.raises(http.client.BadStatusLine, match=r"HTTP/1\.1 2"):
        _get(proxy.address)


def test_http_refused_by_limit_data_zero(http_server, multiconn_proxy_factory):
    # LimitData(0) closes as the connection starts, maybe before the proxy read the request:
    # the close then sends an RST (unread data), so urllib sees a reset or a disconnect.
    proxy = multiconn_proxy_factory(http_server.server_address)
    proxy.add(LimitData(bytes=0), direction="downstream")
    with pytest.raises((ConnectionResetError, urllib.error.URLError)):
        _get(proxy.address)


def test_http_reset_by_reset_peer(http_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(http_server.server_address)
    proxy.add(ResetPeer(timeout_ms=0), direction="downstream")
    with pytest.raises((ConnectionResetError, urllib.error.URLError)) as info:
        _get(proxy.address)
    if isinstance(info.value, urllib.error.URLError):
        assert isinstance(info.value.reason, ConnectionResetError)


# -- the CLI -----------------------------------------------------------------------------------
def test_parse_fault_syntax():
    toxic, add = parse_fault("latency:ms=50,jitter=5,direction=both,probability=0.5")
    assert toxic == Latency(ms=50, jitter=5)
    assert add == {"direction": "both", "probability": 0.5}
    toxic, add = parse_fault("limit-data:bytes=10,name=cut")
    assert toxic == LimitData(bytes=10)
    assert add == {"name": "cut"}
    with pytest.raises(ValueError, match=r"unknown fault 'lag'.*known toxic faults: latency"):
        parse_fault("lag:ms=1")
    with pytest.raises(ValueError, match="latency takes ms, jitter"):
        parse_fault("latency:seconds=1")
    with pytest.raises(ValueError, match="key=value"):
        parse_fault("latency:50")


def test_cli_bad_fault_is_one_line_error(capsys):
    from pytest_multiconn.cli import main

    assert main(["proxy", "127.0.0.1", "0", "127.0.0.1", "9", "--fault", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("multiconn: error: unknown fault 'nope'")
    assert main(["proxy", "127.0.0.1", "0", "192.0.2.1", "80"]) == 2
    assert "allow_remote" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_cli_proxy_runs_until_ctrl_c(multiconn_server):
    cmd = [sys.executable, "-m", "pytest_multiconn.cli", "proxy", "127.0.0.1", "0",
           multiconn_server.host, str(multiconn_server.port),
           "--fault", "latency:ms=60,direction=downstream", "--seed", "3", "--duration", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("proxy listening on 127.0.0.1:"), first
        port = int(first.split()[3].rsplit(":", 1)[1])
        with connect(("127.0.0.1", port)) as client:
            start = time.monotonic()
            client.sendall(b"abc")
            assert recv_exactly(client, 3) == b"abc"
            assert time.monotonic() - start >= 0.06
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "proxied 1 connections" in out
