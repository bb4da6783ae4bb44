"""ProtocolServer (asyncio-shaped handlers) and the fakes on it, over real loopback sockets."""

from __future__ import annotations

import asyncio
import select
import socket
from typing import Any

import h11
import pytest

from pytest_multiconn.exchanges import RESP, encode_command
from pytest_multiconn.servers import HTTPProtocol, LineProtocol, ProtocolServer, RedisProtocol


def _recv_until(sock: socket.socket, end: bytes, limit: int = 1 << 20) -> bytes:
    got = b""
    while not got.endswith(end) and len(got) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


class Upper(asyncio.Protocol):
    """A real asyncio.Protocol subclass: the server must drive it unchanged."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())

    def eof_received(self) -> bool:
        self.transport.write(b"BYE")
        self.transport.write_eof()
        return True  # keep the connection half-open, as asyncio allows


def test_asyncio_protocol_runs_unchanged_with_half_close() -> None:
    with ProtocolServer(Upper) as server, socket.create_connection(server.address, 5) as sock:
        sock.sendall(b"abc")
        assert _recv_until(sock, b"ABC") == b"ABC"
        sock.shutdown(socket.SHUT_WR)
        assert _recv_until(sock, b"BYE") == b"BYE"
        assert sock.recv(10) == b""  # our write_eof arrived after the reply
        server.wait_for_closed(1)


def test_handler_without_pause_writing_stops_reading_a_never_reader() -> None:
    # The peer never reads: the connection must stop reading, not buffer without bound.
    with ProtocolServer(LineProtocol, high_water=64 * 1024) as server, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sticks
        sock.connect(server.address)
        sock.setblocking(False)
        chunk = (b"x" * 1023 + b"\n") * 64
        sent = 0
        for _ in range(20000):  # bounded: ends when the kernel takes no more for a while
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                # Our send buffer is full.  Either the server stopped reading (done) or it is
                # still draining us: then select() says writable again soon.
                _, writable, _ = select.select([], [sock], [], 0.5)
                if not writable:
                    break
        server.wait_for(lambda s: all(c.reading_paused for c in server.connections()), 5,
                        "the server to stop reading from the never-reader")
        (info,) = server.connections()
        assert info.buffered < 4 * 64 * 1024  # bounded near the high-water mark
        assert sent > 1024 * 1024  # and that with over a MiB offered


def test_constructor_validates_factory() -> None:
    with pytest.raises(TypeError, match="protocol_factory must be a callable"):
        ProtocolServer(42)  # type: ignore[arg-type]


def test_http_fake_pipelines_keep_alive() -> None:
    with ProtocolServer(HTTPProtocol) as server, socket.create_connection(server.address, 5) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        client = h11.Connection(h11.CLIENT)
        got = 0
        for _ in range(3):
            client.send(h11.Request(method="GET", target="/a", headers=[("Host", "x")]))
            client.send(h11.EndOfMessage())
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(s.recv(65536))
                    continue
                if isinstance(event, h11.Response):
                    assert event.status_code == 200
                if isinstance(event, h11.EndOfMessage):
                    got += 1
                    client.start_next_cycle()
                    break
        assert got == 3
        s.sendall(b"\x00garbage\r\n\r\n")
        assert _recv_until(s, b"bad request\n").startswith(b"HTTP/1.1 400")


def test_redis_fake_speaks_resp_to_a_real_client() -> None:
    redis = pytest.importorskip("redis")
    with ProtocolServer(lambda: RedisProtocol({})) as server:
        client = redis.Redis(host=server.host, port=server.port, socket_timeout=5, protocol=2)
        try:
            assert client.ping()
            assert client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.get("missing") is None
        finally:
            client.close()
        with socket.create_connection(server.address, 5) as s:
            s.sendall(b"PING\r\n" + encode_command("ECHO", "hi"))
            assert _recv_until(s, b"hi\r\n") == b"+PONG\r\n$2\r\nhi\r\n"
        assert RESP().name == "redis"
