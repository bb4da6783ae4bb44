"""EchoServer over real loopback sockets: echo, flow control, half-close, resets, limits."""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from pytest_multiconn import (
    AddressError,
    AddressInUseError,
    EchoServer,
    LoopThreadError,
    MultiConnClient,
    RemoteBindError,
    wait_until,
)
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import EVENT_READ
from pytest_multiconn.lowlevel import EchoConnection

TIMEOUT = 10


@pytest.fixture
def server() -> Iterator[EchoServer]:
    with EchoServer() as srv:
        yield srv


def connect(address: tuple[str, int] | str) -> socket.socket:
    family = (
        socket.AF_UNIX
        if isinstance(address, str)
        else (socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    )
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(min(1 << 20, n - len(chunks)))
        if not data:
            raise AssertionError(f"EOF after {len(chunks)} of {n} bytes")
        chunks += data
    return bytes(chunks)


def recv_until_eof(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    chunks = bytearray()
    while len(chunks) <= limit:
        data = sock.recv(1 << 20)
        if not data:
            return bytes(chunks)
        chunks += data
    raise AssertionError("more data than expected")


def test_binds_loopback_ephemeral_port_and_echoes(server: EchoServer) -> None:
    assert server.host == "127.0.0.1"
    assert 0 < server.port < 65536
    assert server.address == (server.host, server.port)
    with connect(server.address) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
    stats = server.wait_for_closed(1)
    assert (stats.accepted, stats.bytes_in, stats.bytes_out) == (1, 5, 5)


def test_large_payloads_echo_byte_exact_on_many_connections(server: EchoServer) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    results = MultiConnClient(server.address, 8, [payload], timeout=TIMEOUT).run()
    results.check()
    assert [r.received for r in results] == [len(payload)] * 8


def test_ipv6_and_unix_socket(tmp_path: os.PathLike[str]) -> None:
    with EchoServer("::1") as v6:
        assert v6.host == "::1"
        MultiConnClient(v6.address, 3).run().check()
    path = os.path.join(os.fspath(tmp_path), "echo.sock")
    with EchoServer(unix_path=path) as unix:
        assert unix.address == path
        MultiConnClient(unix.address, 3).run().check()
        with pytest.raises(AttributeError, match="no port"):
            _ = unix.port
    assert not os.path.exists(path), "the Unix socket path is removed on stop"


def test_write_interest_only_while_output_pending(server: EchoServer) -> None:
    with connect(server.address) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        masks = server.loop.run_sync(
            lambda: [h._mask for h in server.loop.handlers() if isinstance(h, Connection)]
        )
        assert masks == [EVENT_READ], "an idle connection must not ask for EVENT_WRITE"


def test_reader_that_never_reads_pauses_reading_at_high_water() -> None:
    high = 64 * 1024
    total = 16 * 1024 * 1024
    with EchoServer(high_water=high) as server, connect(server.address) as sock:
        # The writer blocks once every buffer on the way is full: ours, the server's receive
        # buffer, the server's output buffer (up to the high-water mark) and its send buffer.
        writer = threading.Thread(
            target=lambda: (sock.sendall(b"z" * total), sock.shutdown(socket.SHUT_WR))
        )
        writer.start()
        try:
            info = wait_until(
                lambda: [c for c in server.connections() if c.reading_paused],
                TIMEOUT,
                "the server to pause reading",
                describe=lambda: str(server.connections()),
            )[0]
            # What the server holds is bounded by the high-water mark plus one read.
            assert info.buffered <= high + Connection.read_size
            assert server.stats().peak_buffered <= high + Connection.read_size
            assert info.bytes_in < total, "the rest waits in kernel buffers, not in our memory"
        finally:
            # Read everything back: reading resumes and nothing is lost.
            echoed = recv_until_eof(sock)
            writer.join(TIMEOUT)
        assert len(echoed) == total
        assert server.stats().peak_buffered <= high + Connection.read_size


def test_half_close_after_partial_send_loses_nothing(server: EchoServer) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with connect(server.address) as sock:
        # Send without reading, then half-close: the server must flush every byte it has
        # before it closes (the tutorial's server closes at once and drops them).
        writer = threading.Thread(
            target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR))
        )
        writer.start()
        echoed = recv_until_eof(sock)
        writer.join(TIMEOUT)
    assert echoed == payload


def test_reset_mid_stream_closes_only_that_connection(server: EchoServer) -> None:
    with connect(server.address) as good:
        bad = connect(server.address)
        server.wait_for_connections(2)
        bad.sendall(b"partial message")
        server.wait_for_bytes(len(b"partial message"))
        bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bad.close()  # RST, and it has unread echo data
        server.wait_for_closed(1)
        good.sendall(b"still here")
        assert recv_exactly(good, 10) == b"still here"
    stats = server.wait_for_closed(2)
    assert stats.peer_errors == 1
    server.check()  # a peer's reset is not a server error


def test_idle_timeout_closes_silent_clients() -> None:
    with EchoServer(idle_timeout=0.1) as server, connect(server.address) as silent:
        assert silent.recv(1) == b"", "a silent client is closed by the idle timeout"
        stats = server.wait_for_closed(1)
        assert stats.idle_closed == 1
        closed = server.recently_closed()
        assert closed[0].close_reason == "idle timeout"
        assert "idle for 0.1s" in closed[0].transcript


def test_max_connections_holds_extra_clients_in_the_backlog() -> None:
    with EchoServer(max_connections=2) as server:
        socks = [connect(server.address) for _ in range(3)]
        try:
            server.wait_for_accepted(2)
            socks[2].sendall(b"waiting")
            assert server.stats().accepted == 2
            assert server.stats().accept_paused
            socks[0].close()
            server.wait_for_accepted(3)
            assert recv_exactly(socks[2], 7) == b"waiting"
        finally:
            for s in socks:
                s.close()


def test_stop_closes_every_connection_and_joins_the_thread() -> None:
    server = EchoServer().start()
    clients = [connect(server.address) for _ in range(100)]
    try:
        server.wait_for_connections(100)
        thread = server.loop.thread
        server.stop()
        assert thread is not None
        assert not thread.is_alive()
        for c in clients:
            assert c.recv(1) == b""
        server.stop()  # idempotent
        assert "(stopped)" in repr(server)
    finally:
        for c in clients:
            c.close()


def test_loop_errors_are_reraised_by_check() -> None:
    class Exploding(EchoConnection):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError(f"cannot handle {data!r}")

    class ExplodingServer(EchoServer):
        def make_connection(self, sock: socket.socket, addr: object) -> Connection:
            return Exploding(self, sock, addr)

    server = ExplodingServer().start()
    try:
        with connect(server.address) as sock:
            sock.sendall(b"boom")
            assert sock.recv(1) == b"", "the failing connection is closed"
        with pytest.raises(LoopThreadError, match="cannot handle b'boom'"):
            server.wait_for_closed(1)
    finally:
        server.stop()


def test_context_manager_reraises_loop_errors_at_exit() -> None:
    class Exploding(EchoConnection):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("late failure")

    class ExplodingServer(EchoServer):
        def make_connection(self, sock: socket.socket, addr: object) -> Connection:
            return Exploding(self, sock, addr)

    # The error is raised as the server exits, inside pytest.raises.
    with (  # noqa: PT012 - the raise comes from the server's __exit__
        pytest.raises(LoopThreadError, match="late failure"),
        ExplodingServer() as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b"x")
        assert sock.recv(1) == b""


def test_refuses_non_loopback_without_opt_in() -> None:
    with pytest.raises(RemoteBindError, match="allow_remote=True"):
        EchoServer("0.0.0.0").start()
    with EchoServer("0.0.0.0", allow_remote=True) as server:
        MultiConnClient(("127.0.0.1", server.port), 1).run().check()


def test_address_in_use_says_what_to_do(server: EchoServer) -> None:
    with pytest.raises(AddressInUseError, match=f"{server.port} is already in use.*port 0"):
        EchoServer(port=server.port).start()


@pytest.mark.parametrize("port", [-1, 65536, "http", 1.5, True])
def test_bad_port_is_rejected(port: object) -> None:
    with pytest.raises(AddressError, match="port must be an integer from 0 to 65535"):
        EchoServer(port=port).start()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"high_water": 0}, "high_water must be a positive"),
        ({"high_water": 10, "low_water": 20}, "must not exceed high_water"),
        ({"max_connections": 0}, "max_connections must be at least 1"),
        ({"idle_timeout": 0}, "idle_timeout must be a positive"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EchoServer(**kwargs)  # type: ignore[arg-type]


def test_not_started_server_explains_itself() -> None:
    server = EchoServer()
    assert "not started" in repr(server)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.address
    server.stop()  # stopping a server that never started is harmless


def test_wait_timeout_names_what_and_the_connections(server: EchoServer) -> None:
    with connect(server.address) as sock:
        server.wait_for_connections(1)
        with pytest.raises(TimeoutError, match=r"waiting for 5 open connections(.|\n)*peer="):
            server.wait_for_connections(5, timeout=0.05)
        sock.sendall(b"a")
        assert recv_exactly(sock, 1) == b"a"


def test_repr_and_connection_snapshots(server: EchoServer) -> None:
    with connect(server.address) as sock:
        sock.sendall(b"abc")
        assert recv_exactly(sock, 3) == b"abc"
        (info,) = server.connections()
        assert info.bytes_in == info.bytes_out == 3
        assert info.peer == sock.getsockname()
        text = server.loop.run_sync(lambda: repr(server.loop.handlers()))
        assert "EchoConnection" in text
        assert "in=3 out=3 buffered=0" in text
        assert f"127.0.0.1:{server.port}" in repr(server)
        assert re.search(r"connect\s+peer", info.transcript), info.transcript
        assert re.search(r"\bin\s+3 B", info.transcript), info.transcript
        assert re.search(r"\bout\s+3 B", info.transcript), info.transcript
