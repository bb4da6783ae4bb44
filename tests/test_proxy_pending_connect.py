"""Bytes that reach the proxy before its connect to the target has finished, and slices that
must leave in sends of their own.

The ordering is forced, not hoped for: the target listens with a backlog of 0 and one
connection already waiting in its accept queue, so Linux drops the proxy's SYN and its
connect stays in progress (the SYN is sent again after about a second).  The test waits until
the proxy has read the client's bytes, then accepts the waiting connection, which makes room
for the retransmitted SYN.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from helpers import WAIT, connect, recv_exactly, recv_until_eof
from pytest_multiconn.lowlevel import wait_until
from pytest_multiconn.proxy import ResetPeer, Slicer, When

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux accept queue")

SYN_RETRY = 10.0  # bound on the proxy's connect once there is room (the retry comes at ~1 s)


@contextlib.contextmanager
def full_target() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listener whose accept queue is full, and the connection filling it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    listener.settimeout(SYN_RETRY)
    filler = socket.create_connection(listener.getsockname(), timeout=WAIT)
    try:
        yield listener, filler
    finally:
        filler.close()
        listener.close()


def wait_read(proxy, n: int) -> None:
    """Bounded poll: the proxy has read ``n`` bytes from its clients."""
    wait_until(lambda: proxy.stats().bytes_in >= n, WAIT,
               f"the proxy to read {n} bytes from the client")


def accept_proxy(listener: socket.socket) -> socket.socket:
    """Make room (accept the filler), then accept the proxy's connection."""
    first, _ = listener.accept()
    first.close()
    conn, _ = listener.accept()
    conn.settimeout(WAIT)
    return conn


def out_ops(entries: list, direction: str) -> tuple[int, int]:
    """(bytes, send calls) of the transcript's ``direction`` entries."""
    picked = [e for e in entries if e.direction == direction]
    return sum(e.size for e in picked), sum(e.count for e in picked)


def test_slices_of_bytes_read_before_the_connect_finished_leave_one_send_each(
    multiconn_proxy_factory,
):
    startup = bytes(range(41))  # a PostgreSQL startup packet is 41 bytes
    with full_target() as (listener, _):
        proxy = multiconn_proxy_factory(listener.getsockname())
        proxy.add(Slicer(average_size=1), direction="upstream")
        with connect(proxy.address) as client:
            client.sendall(startup)
            wait_read(proxy, len(startup))  # read while the connect is still in progress
            with accept_proxy(listener) as server:
                assert recv_exactly(server, len(startup)) == startup
                handle = proxy.wait_for_connection()
                entries = handle.entries()
    assert "sliced into 41" in handle.transcript
    assert out_ops(entries, "to-server") == (41, 41), handle.transcript


def test_slices_toward_a_unix_socket_leave_one_send_each(multiconn_proxy_factory, tmp_path):
    path = str(tmp_path / "target.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(WAIT)
        proxy = multiconn_proxy_factory(path)
        proxy.add(Slicer(average_size=1), direction="upstream")
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server, _ = listener.accept()
            with server:
                server.settimeout(WAIT)
                for size in (41, 3000):  # 3000 one-byte sends fill a Unix socket's buffer
                    data = bytes(i % 251 for i in range(size))
                    client.sendall(data)
                    assert recv_exactly(server, size) == data
                entries = handle.entries()
    assert out_ops(entries, "to-server") == (3041, 3041), handle.transcript


def test_when_reset_after_a_match_read_before_the_connect_finished(multiconn_proxy_factory):
    with full_target() as (listener, _):
        proxy = multiconn_proxy_factory(listener.getsockname())
        proxy.add(When(ResetPeer(), match=b"COMMIT"), direction="upstream")
        with connect(proxy.address) as client:
            client.sendall(b"BEGIN; COMMIT;")
            wait_read(proxy, 14)
            with accept_proxy(listener) as server:
                # The chunk that completed the match goes first, then the reset.
                assert recv_exactly(server, 14) == b"BEGIN; COMMIT;"
                with pytest.raises(ConnectionResetError):
                    recv_until_eof(server)
            with pytest.raises(ConnectionResetError):
                recv_until_eof(client)
