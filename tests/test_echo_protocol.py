"""Echo is one protocol: ``ProtocolServer(EchoProtocol)`` and ``EchoServer()`` are the same server.

``EchoServer`` is a ``ProtocolServer`` whose factory is ``EchoProtocol``; its tuned plain
connection (``fast_connection``) is only an optimisation.  These tests hold the two to the same
bytes on the wire, the same counters and the same pause for a peer that never reads, plain and
over TLS, and pin where the fast path is (and is not) taken.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pytest_multiconn.servers as servers_namespace
from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.faults import HalfClose, PartialSend, Slicer
from pytest_multiconn.lowlevel import EchoConnection
from pytest_multiconn.servers import EchoProtocol, ProtocolServer
from pytest_multiconn.servers.echo import _PlainEchoConnection
from pytest_multiconn.servers.protocol import ProtocolConnection

TIMEOUT = 10.0
HIGH_WATER = 64 * 1024
CHUNK = bytes(range(256)) * 256  # 64 KiB; every chunk the same, so a retried TLS write fits

Make = Callable[..., ProtocolServer]

#: The two ways to build an echo server; every wire test runs against both.
BUILDERS: dict[str, Make] = {
    "ProtocolServer(EchoProtocol)": lambda **kw: ProtocolServer(EchoProtocol, **kw),
    "EchoServer()": EchoServer,
}


@pytest.fixture(params=["plain", "tls"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(BUILDERS))
def build(request: pytest.FixtureRequest, mode: str) -> Iterator[Make]:
    started: list[ProtocolServer] = []

    def make(**kwargs: Any) -> ProtocolServer:
        if mode == "tls":
            kwargs["tls"] = True
        server = BUILDERS[request.param](**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    for server in started:
        server.check()


def connection_types(server: ProtocolServer) -> list[type]:
    return server.loop.run_sync(
        lambda: [type(h) for h in server.loop.handlers() if isinstance(h, Connection)]
    )


def open_client(server: ProtocolServer, *, rcvbuf: int | None = None) -> socket.socket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: it sticks
    raw.settimeout(TIMEOUT)
    raw.connect(server.address)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if server.client_tls is None:
        return raw
    return server.client_tls.wrap_socket(raw, server_hostname="127.0.0.1")


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    for _ in range(n):  # bounded: each recv returns at least one byte or EOF
        if len(got) >= n:
            break
        chunk = sock.recv(n - len(got))
        assert chunk, f"EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


# -- what the names are ---------------------------------------------------------------------


def test_echo_server_is_a_protocol_server_whose_protocol_is_echo_protocol() -> None:
    assert issubclass(EchoServer, ProtocolServer)
    assert issubclass(EchoConnection, ProtocolConnection)
    assert EchoServer.connection_class is EchoConnection
    assert EchoServer().protocol_factory is EchoProtocol
    # Public where users import it from (publish() set the module path).
    assert "EchoProtocol" in servers_namespace.__all__
    assert EchoProtocol.__module__ == "pytest_multiconn.servers"


def test_echo_protocol_runs_unchanged_under_asyncio() -> None:
    # asyncio-shaped for real: asyncio's own loop drives it as it drives any Protocol.
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello asyncio")
            writer.write_eof()
            got = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the server closes
            writer.close()
            return got

    assert asyncio.run(main()) == b"hello asyncio"


# -- the same server on the wire ------------------------------------------------------------


def test_both_echo_every_byte_to_many_connections(build: Make, mode: str) -> None:
    server = build()
    messages = [b"hello\n", CHUNK * 4, b"x" * 3]  # the large one fills buffers: partial sends
    results = MultiConnClient(
        server.address, 20, messages, tls=server.client_tls, timeout=TIMEOUT
    ).run()
    results.check()
    stats = server.wait_for_closed(20)
    total = 20 * sum(len(m) for m in messages)
    assert (stats.accepted, stats.closed, stats.bytes_in, stats.bytes_out) == (
        20, 20, total, total
    )
    assert stats.peer_errors == 0
    if mode == "tls":
        assert stats.tls_handshakes == 20


def test_both_echo_one_byte_sends_and_finish_after_a_half_close(build: Make) -> None:
    server = build()
    payload = bytes(range(256)) * 8
    faults = [PartialSend(max_chunk=1), HalfClose()]
    MultiConnClient(
        server.address, 3, [payload], faults=faults, tls=server.client_tls, timeout=TIMEOUT
    ).run().check()
    server.wait_for_closed(3)
    for info in server.recently_closed():
        # EchoProtocol.eof_received returns None: echo what was read, then close (a FIN).
        assert info.eof_received
        assert info.close_reason in {"finished", "both sides closed"}, info
        assert info.bytes_in == info.bytes_out == len(payload)


def _flood(sock: socket.socket, deadline: float, record: bytearray) -> None:
    """Send CHUNK until the kernel takes nothing more for 0.2 s (or the deadline), appending
    to ``record`` exactly the bytes that left.

    A plain send may take part of a chunk (the next one starts again at CHUNK[0], so the
    record is what the echo must match).  A TLS write that would block must be retried with
    the same buffer: every chunk is the same object, so the retry is the next send.
    """
    sock.setblocking(False)
    try:
        while time.monotonic() < deadline:
            try:
                n = sock.send(CHUNK)
            except (BlockingIOError, ssl.SSLWantWriteError):
                _, writable, _ = select.select([], [sock], [], 0.2)
                if not writable:
                    break
            else:
                record += CHUNK[:n]
    finally:
        sock.settimeout(TIMEOUT)


def test_both_pause_reading_at_high_water_for_a_never_reader(build: Make, mode: str) -> None:
    server = build(high_water=HIGH_WATER)
    with open_client(server, rcvbuf=4096) as sock:
        # The client never reads: the server's echo backs up, past the high-water mark, and
        # it must stop reading rather than buffer what keeps coming.  Flood again until it
        # says so: a loaded machine may drain a round more before it pauses.
        deadline = time.monotonic() + TIMEOUT
        record = bytearray()
        paused = False
        while not paused and time.monotonic() < deadline:
            _flood(sock, deadline, record)
            paused = [c.reading_paused for c in server.connections()] == [True]
        sent = len(record)
        assert paused, f"the server never paused reading after {sent} bytes: {server.stats()}"
        stats = server.stats()
        (info,) = server.connections()
        assert stats.peak_buffered > HIGH_WATER, stats  # it paused because of the mark
        # It stopped buffering near the mark: at most one read past it (a plain recv is
        # 64 KiB; the TLS layer joins records into batches of up to 256 KiB).
        one_read = 256 * 1024 if mode == "tls" else 64 * 1024
        assert info.buffered <= HIGH_WATER + one_read, info
        # What it did not read waits in the kernel's buffers, on the never-reader's side.
        assert stats.bytes_in < sent, (stats, sent)
        # Now read: the server resumes and every byte sent comes back, in order.  (Under
        # TLS a write that would block may have left part of one more chunk: it may follow.)
        got = bytearray()
        for _ in range(sent // 4096 + 1000):  # bounded: each recv returns at least a byte
            if len(got) >= sent:
                break
            chunk = sock.recv(1 << 20)
            assert chunk, f"EOF after {len(got)} of {sent} bytes"
            got += chunk
        assert len(got) >= sent
        assert got[:sent] == record, "the echo after the pause differs from what was sent"
        server.wait_for(
            lambda _: [c.reading_paused for c in server.connections()] == [False],
            TIMEOUT,
            "the server to resume reading once the peer read",
        )


# -- where the tuned path is taken ----------------------------------------------------------


def test_fast_path_only_for_a_plain_echo_server() -> None:
    cases: list[tuple[ProtocolServer, type]] = [
        (EchoServer(), _PlainEchoConnection),
        (EchoServer(tls=True), EchoConnection),
        (EchoServer(on_event=lambda *a: None), EchoConnection),
        (ProtocolServer(EchoProtocol), ProtocolConnection),
        (EchoServer(faults=[Slicer(average_size=4)]), EchoConnection),
    ]
    for server, expected in cases:
        with server, open_client(server) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
            assert connection_types(server) == [expected], server


class LoudEcho(EchoProtocol):
    """An echo handler that is not exactly EchoProtocol: it must not get the inline echo."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())


def test_a_different_handler_on_an_echo_server_takes_the_general_path() -> None:
    class LoudServer(EchoServer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.protocol_factory = LoudEcho

    with LoudServer() as server, open_client(server) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"PING"
        assert connection_types(server) == [EchoConnection]


def test_fast_connection_is_asked_only_without_layer_and_observer() -> None:
    asked: list[str] = []

    class Probe(ProtocolServer):
        def fast_connection(self, sock: socket.socket, addr: Any) -> Connection | None:
            asked.append(self.name)
            return None  # the general path, as the default does

    for kwargs, want in (({}, 1), ({"tls": True}, 0), ({"on_event": lambda *a: None}, 0)):
        asked.clear()
        with Probe(EchoProtocol, **kwargs) as server, open_client(server) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
            assert connection_types(server) == [ProtocolConnection]
        assert len(asked) == want, (kwargs, asked)


class Counted(EchoProtocol):
    made = 0
    lost = 0

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        type(self).made += 1

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).lost += 1
        super().connection_lost(exc)


def test_faulty_server_makes_one_handler_per_connection_and_loses_it_once(mode: str) -> None:
    Counted.made = Counted.lost = 0
    tls = True if mode == "tls" else None
    with ProtocolServer(Counted, faults=[Slicer(average_size=5)], tls=tls) as server:
        MultiConnClient(
            server.address, 3, [b"hello world"], tls=server.client_tls, timeout=TIMEOUT
        ).run().check()
        server.wait_for_closed(3)
        closed = server.recently_closed()
        assert len(closed) == 3
        for info in closed:  # 11 B in pieces of 5, 5 and 1
            assert "slicer_downstream[down]: sliced into 3" in info.transcript, info.transcript
    assert (Counted.made, Counted.lost) == (3, 3)


def test_constructors_take_the_same_options_and_the_factory_only_positionally() -> None:
    # The marker's keyword check follows **kwargs up the MRO: both servers offer tls= and
    # every ServerBase option, and EchoServer does not offer a factory it fixes itself.
    from pytest_multiconn.plugin.factory import keywords_of

    assert keywords_of(EchoServer) == keywords_of(ProtocolServer)
    assert {"tls", "high_water", "on_event", "max_connections"} <= keywords_of(EchoServer)
    assert "protocol_factory" not in keywords_of(EchoServer)
    with pytest.raises(TypeError, match="protocol_factory"):
        EchoServer(protocol_factory=LoudEcho)  # type: ignore[call-arg]
    with ProtocolServer(EchoProtocol, tls=True, high_water=HIGH_WATER) as server:
        assert server.client_tls is not None
        assert server.high_water == HIGH_WATER
