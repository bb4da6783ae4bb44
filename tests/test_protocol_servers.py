"""ProtocolServer (asyncio-shaped handlers) and the fakes on it, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import h11
import pytest

from helpers import WAIT, abort, recv_until
from pytest_multiconn.exchanges import RESP, encode_command
from pytest_multiconn.servers import HTTPProtocol, LineProtocol, ProtocolServer, RedisProtocol


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
        assert recv_until(sock, b"ABC") == b"ABC"
        sock.shutdown(socket.SHUT_WR)
        assert recv_until(sock, b"BYE") == b"BYE"
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
        assert recv_until(s, b"bad request\n").startswith(b"HTTP/1.1 400")


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
            assert recv_until(s, b"hi\r\n") == b"+PONG\r\n$2\r\nhi\r\n"
        assert RESP().name == "redis"


# -- asyncio's order of callbacks when the peer has reset (issue 22, item 1) -------------------


class ResetSession(asyncio.Protocol):
    """An unchanged asyncio.Protocol: data_received writes to a peer that reset, then uses the
    state that connection_lost tears down.  asyncio never calls connection_lost from inside
    write(), so this works there; it must work on our server too."""

    events: list[Any]
    made: threading.Event
    lost: threading.Event

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.state: dict[str, bytearray] | None = {"buffer": bytearray()}
        self.events.append("made")
        self.made.set()

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))
        self.transport.write(b"reply 1\n")  # the peer has reset: this write fails
        self.events.append(("closing", self.transport.is_closing()))
        for _ in range(6):  # no-ops; asyncio warns from the 5th on
            self.transport.write(b"more\n")
        assert self.state is not None, "connection_lost ran inside transport.write()"
        self.state["buffer"] += data
        self.events.append("data done")

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc).__name__ if exc is not None else None))
        self.state = None
        self.lost.set()


@contextlib.contextmanager
def _asyncio_server(
    factory: Callable[[], asyncio.Protocol],
) -> Iterator[tuple[Any, Callable[..., object]]]:
    """Real asyncio serving ``factory`` on a loop thread: (address, call_soon_threadsafe)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="asyncio-reference", daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(
            loop.create_server(factory, "127.0.0.1", 0), loop
        ).result(WAIT)
        try:
            yield server.sockets[0].getsockname()[:2], loop.call_soon_threadsafe
        finally:
            loop.call_soon_threadsafe(server.close)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        assert not thread.is_alive(), "the asyncio loop thread did not stop"
        loop.close()


@contextlib.contextmanager
def _our_server(
    factory: Callable[[], asyncio.Protocol],
) -> Iterator[tuple[Any, Callable[..., object]]]:
    with ProtocolServer(factory) as server:
        yield server.address, server.loop.call_soon_threadsafe


@pytest.mark.parametrize("serve", [_asyncio_server, _our_server], ids=["asyncio", "multiconn"])
def test_write_to_a_reset_peer_defers_connection_lost_as_asyncio_does(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Any] = []
    made, lost = threading.Event(), threading.Event()
    protocols: list[ResetSession] = []

    def factory() -> ResetSession:
        proto = ResetSession()
        proto.events, proto.made, proto.lost = events, made, lost
        protocols.append(proto)
        return proto

    caplog.set_level(logging.WARNING)
    with serve(factory) as (address, call_soon_threadsafe):
        client = socket.create_connection(address, WAIT)
        try:
            assert made.wait(WAIT), "connection_made never ran"
            # Hold the server's loop thread while the client sends and resets: the server's
            # socket then holds the data *and* the RST when the loop reads it.
            entered, gate = threading.Event(), threading.Event()

            def hold() -> None:
                entered.set()
                gate.wait(WAIT)

            call_soon_threadsafe(hold)
            assert entered.wait(WAIT), "the server's loop thread never ran the hold"
            try:
                client.sendall(b"hello")
            finally:
                abort(client)
                gate_fd = protocols[0].transport.get_extra_info("socket").fileno()
            try:
                poll = select.poll()
                poll.register(gate_fd, select.POLLERR)  # POLLERR: the RST has arrived
                ready = poll.poll(WAIT * 1000)
                assert ready, "the RST never reached the server"
                assert ready[0][1] & select.POLLERR, f"no RST on the server's socket: {ready}"
            finally:
                gate.set()
            assert lost.wait(WAIT), f"connection_lost never ran: {events}"
        finally:
            client.close()
    assert events == [
        "made",
        ("data", b"hello"),
        ("closing", True),
        "data done",
        ("lost", "ConnectionResetError"),
    ]
    warnings = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
    assert len(warnings) == 2  # the 5th and 6th write after the loss, as asyncio counts


class CloseInData(asyncio.Protocol):
    """Closes its transport in data_received, then still uses its state."""

    events: list[Any]
    lost: threading.Event

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.state: list[bytes] | None = []

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"bye\n")
        self.transport.close()
        self.events.append(("closing", self.transport.is_closing()))
        assert self.state is not None, "connection_lost ran inside transport.close()"
        self.state.append(data)
        self.events.append("data done")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))
        self.state = None
        self.lost.set()


@pytest.mark.parametrize("serve", [_asyncio_server, _our_server], ids=["asyncio", "multiconn"])
def test_close_in_data_received_defers_connection_lost(serve: Callable[..., Any]) -> None:
    events: list[Any] = []
    lost = threading.Event()

    def factory() -> CloseInData:
        proto = CloseInData()
        proto.events, proto.lost = events, lost
        return proto

    with serve(factory) as (address, _), socket.create_connection(address, WAIT) as client:
        client.sendall(b"hi\n")
        assert recv_until(client, b"bye\n") == b"bye\n"
        assert client.recv(10) == b""
        assert lost.wait(WAIT), f"connection_lost never ran: {events}"
    assert events == [("closing", True), "data done", ("lost", None)]
