"""FaultProxy as a relay (no faults) and in step mode, over real loopback sockets."""

from __future__ import annotations

import errno
import select
import socket
import threading

import pytest

from proxy_helpers import TIMEOUT, abort, connect, raw_target, recv_exactly, recv_until_eof
from pytest_multiconn import (
    EchoServer,
    FaultProxy,
    Latency,
    MultiConnClient,
    RemoteBindError,
    WaitTimeout,
    closed_port_address,
)


def test_echo_through_proxy_many_connections(multiconn_server: EchoServer, multiconn_proxy):
    proxy = multiconn_proxy(multiconn_server)
    messages = [b"x" * 1000, b"hello", bytes(range(256)) * 40]
    MultiConnClient(proxy.address, 50, messages, timeout=TIMEOUT).run().check()
    proxy.wait_for_closed(50)
    stats = proxy.stats()
    assert stats.accepted == 50
    total = 50 * sum(map(len, messages))
    assert stats.bytes_in == total
    assert stats.bytes_out == total


def test_thousands_of_connections(multiconn_server: EchoServer, multiconn_proxy):
    proxy = multiconn_proxy(multiconn_server)
    MultiConnClient(proxy.address, 2000, [b"ping"], timeout=30).run().check()
    proxy.wait_for_closed(2000, timeout=30)
    multiconn_server.wait_for_closed(2000, timeout=30)
    assert multiconn_server.stats().accepted == 2000


def test_ipv6_and_unix_socket_targets(multiconn_server_factory, multiconn_proxy, tmp_path):
    try:
        v6 = multiconn_server_factory(host="::1")
    except OSError as exc:  # pragma: no cover - hosts without IPv6 loopback
        pytest.skip(f"no IPv6 loopback: {exc}")
    unix = multiconn_server_factory(unix_path=str(tmp_path / "echo.sock"))
    for target in (v6, unix):
        proxy = multiconn_proxy(target.address)
        MultiConnClient(proxy.address, 3, timeout=TIMEOUT).run().check()
    unix_proxy = multiconn_proxy(v6, listen=str(tmp_path / "proxy.sock"))
    MultiConnClient(unix_proxy.address, 3, timeout=TIMEOUT).run().check()


def test_half_close_is_forwarded_after_the_data(multiconn_proxy):
    with raw_target() as target:
        proxy = multiconn_proxy(target.address)
        with connect(proxy.address) as client:
            client.sendall(b"request")
            client.shutdown(socket.SHUT_WR)
            server = target.accept()
            # The server sees the data, then end-of-stream, while its own side stays open.
            assert recv_until_eof(server) == b"request"
            server.sendall(b"reply after your EOF")
            assert recv_exactly(client, 20) == b"reply after your EOF"
            server.shutdown(socket.SHUT_WR)
            assert client.recv(10) == b""
        proxy.wait_for_idle()
        assert "eof-to-server" in proxy.recently_closed()[-1].transcript


def test_rst_from_client_becomes_rst_to_server(multiconn_proxy):
    with raw_target() as target:
        proxy = multiconn_proxy(target.address)
        client = connect(proxy.address)
        server = target.accept()
        client.sendall(b"x")
        assert recv_exactly(server, 1) == b"x"
        abort(client)
        with pytest.raises(ConnectionResetError):
            recv_until_eof(server)


def test_rst_from_server_becomes_rst_to_client(multiconn_proxy):
    with raw_target() as target:
        proxy = multiconn_proxy(target.address)
        with connect(proxy.address) as client:
            server = target.accept()
            server.sendall(b"y")
            assert recv_exactly(client, 1) == b"y"
            abort(server)
            target.accepted.remove(server)
            with pytest.raises(ConnectionResetError):
                recv_until_eof(client)
            handle = proxy.handles()
            assert handle == []  # both sides gone
        assert "forwarding RST" in proxy.recently_closed()[-1].transcript


def test_refused_target_resets_the_client(multiconn_proxy):
    with closed_port_address() as address:
        proxy = multiconn_proxy(address)
        # The proxy's RST may arrive before connect() returns, or at the first recv().
        with pytest.raises(ConnectionResetError), connect(proxy.address) as client:
            client.recv(10)


def _fill_until_blocked(sock: socket.socket, limit: int) -> int:
    """Send without blocking until the kernel refuses more; return bytes sent."""
    sock.setblocking(False)
    chunk = b"z" * 65536
    sent = 0
    idle_rounds = 0
    while sent < limit:
        try:
            sent += sock.send(chunk)
            idle_rounds = 0
        except BlockingIOError:
            # Give the proxy a chance to read more; if the socket stays unwritable, the
            # whole path (client -> proxy -> server) is full: that is backpressure.
            _, writable, _ = select.select([], [sock], [], 0.2)
            if not writable:
                idle_rounds += 1
                if idle_rounds >= 3:
                    return sent
    return sent


@pytest.mark.parametrize("slow", ["server", "client"])
def test_backpressure_bounds_the_proxy_buffer(multiconn_proxy, slow):
    limit = 256 * 1024 * 1024
    with raw_target() as target:
        proxy = multiconn_proxy(target.address, high_water=64 * 1024)
        with connect(proxy.address) as client:
            server = target.accept()
            writer, reader = (client, server) if slow == "server" else (server, client)
            sent = _fill_until_blocked(writer, limit)
            assert sent < limit, "the proxy read everything: no backpressure"
            stats = proxy.stats()
            # Bounded by the high-water mark plus one read, not by what the writer offered.
            assert stats.peak_buffered <= 64 * 1024 + 65536 * 2
            (handle,) = proxy.handles()
            moved = handle.stats()
            assert moved["upstream" if slow == "server" else "downstream"] < sent
            # Draining the reader lets everything through, byte for byte.
            writer.setblocking(True)
            writer.shutdown(socket.SHUT_WR)
            assert len(recv_until_eof(reader, limit)) == sent


def test_non_loopback_target_is_refused():
    with pytest.raises(RemoteBindError, match="allow_remote"):
        FaultProxy(("192.0.2.1", 80))
    with pytest.raises(ValueError, match="target must be"):
        FaultProxy(12345)
    with pytest.raises(ValueError, match="port 0"):
        FaultProxy(("127.0.0.1", 0))


def test_context_manager_and_repr(multiconn_server):
    with FaultProxy(multiconn_server, seed=7) as proxy:
        assert proxy.seed == 7
        proxy.add(Latency(ms=1))
        assert "latency_downstream" in repr(proxy)
        MultiConnClient(proxy.address, 2, timeout=TIMEOUT).run().check()
    assert "stopped" in repr(proxy)


# -- step mode ---------------------------------------------------------------------------------
def test_step_mode_delivers_one_byte_at_a_time_exactly(multiconn_proxy):
    with raw_target() as target:
        proxy = multiconn_proxy(target.address, hold=True)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            client.sendall(b"hello")
            assert handle.wait_pending(5, "upstream") == 5
            for expected in b"hello":
                handle.release(1, "upstream")
                # Exactly one byte is readable: recv(100) returns it alone, and nothing more
                # is waiting behind it.
                assert server.recv(100) == bytes([expected])
                assert select.select([server], [], [], 0.02)[0] == []
            assert handle.pending("upstream") == 0
            server.sendall(b"world!")
            handle.release(2, "downstream")
            assert client.recv(100) == b"wo"
            handle.release(4, "downstream")
            assert recv_exactly(client, 4) == b"rld!"
            server.sendall(b"tail")
            handle.wait_pending(4)
            assert handle.release_eof("downstream") == 4  # held bytes are dropped
            assert client.recv(100) == b""
        assert "step: released upstream" in handle.transcript


def test_step_mode_holds_eof_until_released(multiconn_proxy):
    with raw_target() as target:
        proxy = multiconn_proxy(target.address)
        proxy.hold()
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            client.sendall(b"ab")
            client.shutdown(socket.SHUT_WR)
            handle.wait_pending(2, "upstream")
            handle.wait_eof_pending("upstream")
            assert handle.eof_pending("upstream")
            handle.release(2, "upstream")
            assert recv_exactly(server, 2) == b"ab"
            assert select.select([server], [], [], 0.05)[0] == []  # EOF still held
            handle.unhold("upstream")
            assert server.recv(10) == b""


def test_step_mode_errors_are_clear(multiconn_proxy, multiconn_server):
    proxy = multiconn_proxy(multiconn_server)
    with connect(proxy.address):
        handle = proxy.wait_for_connection()
        with pytest.raises(RuntimeError, match="not held"):
            handle.release(1)
        handle.hold()
        with pytest.raises(WaitTimeout, match="1 bytes held downstream"):
            handle.release(1, timeout=0.1)
        with pytest.raises(ValueError, match="direction"):
            handle.pending("sideways")  # type: ignore[arg-type]
    with pytest.raises(WaitTimeout, match="a connection"):
        proxy.wait_for_connection(timeout=0.1)


def test_handle_reset_and_close(multiconn_proxy):
    with raw_target() as target:
        proxy = multiconn_proxy(target.address)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            handle.reset()
            with pytest.raises(ConnectionResetError):
                client.recv(10)
            with pytest.raises(ConnectionResetError):
                server.recv(10)
            handle.wait_closed()
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            handle.close()
            assert client.recv(10) == b""
            assert server.recv(10) == b""
            assert handle.closed


def test_proxy_is_thread_safe_under_concurrent_changes(multiconn_server, multiconn_proxy):
    proxy = multiconn_proxy(multiconn_server)
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for i in range(50):
                name = proxy.add(Latency(ms=0.5), direction="both", name=f"l{i}")
                proxy.update(name, ms=0.2)
                proxy.remove(name)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    thread = threading.Thread(target=churn)
    thread.start()
    MultiConnClient(proxy.address, 20, [b"a" * 5000] * 5, timeout=TIMEOUT).run().check()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert errors == []
    assert proxy.toxics() == []


def test_errno_on_reset_is_econnreset(multiconn_proxy, multiconn_server):
    proxy = multiconn_proxy(multiconn_server)
    with connect(proxy.address) as client:
        proxy.wait_for_connection().reset()
        with pytest.raises(OSError, match="reset") as info:
            client.recv(1)
        assert info.value.errno == errno.ECONNRESET
