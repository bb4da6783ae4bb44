"""The shared socket helpers (tests/helpers.py) fail with a message that says what they
expected and what arrived, within their time and size bounds, and leave the socket's own
timeout as they found it."""

from __future__ import annotations

import socket
import time

import pytest

from helpers import connect, recv_exactly, recv_to_end, recv_until, recv_until_eof

Pair = tuple[socket.socket, socket.socket]


def test_recv_exactly_reads_across_sends_and_records_sizes(tcp_pair: Pair) -> None:
    ours, peer = tcp_pair
    peer.sendall(b"abc")
    sizes: list[int] = []
    assert recv_exactly(ours, 3, sizes=sizes) == b"abc"
    assert sum(sizes) == 3


def test_recv_exactly_names_what_arrived_at_eof(tcp_pair: Pair) -> None:
    ours, peer = tcp_pair
    peer.sendall(b"ab")
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(AssertionError, match=r"expected 5 bytes, got EOF after 2 bytes b'ab'"):
        recv_exactly(ours, 5)


def test_recv_exactly_times_out_and_restores_the_socket_timeout(tcp_pair: Pair) -> None:
    ours, peer = tcp_pair
    ours.settimeout(7.0)
    peer.sendall(b"x")
    with pytest.raises(AssertionError, match=r"expected 2 bytes within 0.2s, got 1 bytes b'x'"):
        recv_exactly(ours, 2, timeout=0.2)
    assert ours.gettimeout() == 7.0


def test_a_shorter_socket_timeout_wins(tcp_pair: Pair) -> None:
    ours, _ = tcp_pair
    ours.settimeout(0.1)
    start = time.monotonic()
    data, error = recv_to_end(ours, timeout=30)
    # 0.1 s against 30: bounds far apart, so a loaded machine cannot blur them.
    assert time.monotonic() - start < 10, "the helper's deadline replaced the socket's timeout"
    assert (data, type(error)) == (b"", TimeoutError)


def test_recv_until_stops_at_the_marker_and_fails_at_eof_without_it(tcp_pair: Pair) -> None:
    ours, peer = tcp_pair
    peer.sendall(b"one\ntwo")
    got = recv_until(ours, b"\n")
    assert got.startswith(b"one\n")  # and what else came in the same recv()
    assert got + recv_exactly(ours, 7 - len(got)) == b"one\ntwo"
    peer.close()
    with pytest.raises(AssertionError, match=r"EOF before b'three'"):
        recv_until(ours, b"three")


def test_recv_until_eof_is_bounded_in_bytes(tcp_pair: Pair) -> None:
    ours, peer = tcp_pair
    peer.sendall(b"z" * 100)
    with pytest.raises(AssertionError, match=r"no EOF after 10 bytes"):
        recv_until_eof(ours, limit=10)


def test_connect_sets_buffers_before_the_handshake() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock = connect(listener.getsockname(), rcvbuf=4096, nodelay=True)
        with sock, listener.accept()[0]:
            # Linux doubles the value asked for, for its bookkeeping; far below the default.
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 2 * 4096
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
