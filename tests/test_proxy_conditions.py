"""Faults that trigger on the conversation (``When``), measured through FaultProxy."""

from __future__ import annotations

import re
import socket
import time

import pytest

from helpers import WAIT, connect, raw_target, recv_exactly, recv_until_eof
from pytest_multiconn import EchoServer
from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.lowlevel import wait_until
from pytest_multiconn.proxy import Latency, LimitData, ResetPeer, Slicer, When


def open_echoing(proxy, n: int) -> tuple[list[socket.socket], list]:
    """``n`` connections through ``proxy``, each past one echo, with their proxy handles."""
    socks, handles = [], []
    for _ in range(n):
        sock = connect(proxy.address)
        sock.sendall(b"BEGIN;")
        assert recv_exactly(sock, 6) == b"BEGIN;"
        socks.append(sock)
        handles.append(proxy.wait_for_connection())
    return socks, handles


def test_reset_exactly_the_connection_that_sends_commit(
    multiconn_server: EchoServer, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server, seed=1)
    proxy.add(When(ResetPeer(), match=b"COMMIT", before_match=True), direction="upstream")
    (a, b, c), handles = open_echoing(proxy, 3)
    try:
        b.sendall(b"UPDATE t; COM")
        # "UPDATE t; " passes; "COM" is held, since it may be the start of COMMIT.
        assert recv_exactly(b, 10) == b"UPDATE t; "
        # A bounded poll: the proxy offers no event for "bytes read but held".
        wait_until(lambda: handles[1].stats()["upstream"] == 19, WAIT, "the proxy to read 'COM'")
        assert handles[1].stats()["to_server"] == len(b"BEGIN;UPDATE t; ")
        a.sendall(b"COM")  # the same prefix on another connection...
        b.sendall(b"MIT;")  # ...while b completes the trigger, split across two writes
        with pytest.raises(ConnectionResetError):
            recv_until_eof(b)
        handles[1].wait_closed()
        a.sendall(b"PUTE;")  # ...turns out not to be COMMIT: released, in order
        assert recv_exactly(a, 8) == b"COMPUTE;"
        c.sendall(b"SELECT 1;")
        assert recv_exactly(c, 9) == b"SELECT 1;"
    finally:
        for sock in (a, b, c):
            sock.close()
    # Only b met the condition; a and c were never touched.
    assert "condition met at byte 16" in handles[1].transcript
    for handle in (handles[0], handles[2]):
        assert "condition met" not in handle.transcript


def test_after_bytes_arms_the_toxic_at_that_byte(
    multiconn_server: EchoServer, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(When(LimitData(bytes=5), after_bytes=10), direction="downstream")
    payload = bytes(range(100))
    with connect(proxy.address) as sock:
        sock.sendall(payload)
        # 10 bytes untouched, then the limit's 5, then the close.
        assert recv_until_eof(sock) == payload[:15]


def test_regex_delays_only_the_matching_request(
    multiconn_server: EchoServer, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(When(Latency(ms=200), match=re.compile(rb"GET /slow\b")), direction="upstream")
    (slow, fast), (slow_handle, fast_handle) = open_echoing(proxy, 2)
    try:
        start = time.monotonic()
        slow.sendall(b"GET /slow HTTP/1.1\r\n")
        assert recv_exactly(slow, 20) == b"GET /slow HTTP/1.1\r\n"
        assert time.monotonic() - start >= 0.2
        fast.sendall(b"GET /slowly-not HTTP/1.1\r\n")  # \b: not a match
        assert recv_exactly(fast, 26) == b"GET /slowly-not HTTP/1.1\r\n"
    finally:
        slow.close()
        fast.close()
    assert "condition met" in slow_handle.transcript
    assert "condition met" not in fast_handle.transcript


def test_held_prefix_is_released_at_eof_and_on_removal(
    multiconn_server: EchoServer, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server)
    name = proxy.add(When(ResetPeer(), match=b"COMMIT", before_match=True), direction="upstream")
    (first, second), _ = open_echoing(proxy, 2)
    try:
        first.sendall(b"COMM")
        first.shutdown(socket.SHUT_WR)  # the stream ends: "COMM" was no COMMIT after all
        assert recv_until_eof(first) == b"COMM"
        second.sendall(b"xCOMMI")
        assert recv_exactly(second, 1) == b"x"
        proxy.remove(name)  # removing the fault passes on what it held
        assert recv_exactly(second, 5) == b"COMMI"
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"toxic": "latency"}, "When: toxic must be a toxic such as ResetPeer(), got 'latency'"),
        ({"match": b""}, "When: match must be non-empty bytes"),
        ({"match": "COMMIT"}, "When: match must be bytes or a compiled bytes regex"),
        ({"match": re.compile("COMMIT")}, "When: match must be bytes or a compiled bytes regex"),
        ({"after_bytes": -1}, "When: after_bytes must be an integer >= 0, got -1"),
        ({"after_bytes": True}, "When: after_bytes must be an integer >= 0, got True"),
        ({"window": 0}, "When: window must be an integer >= 1, got 0"),
        ({"before_match": 1}, "When: before_match must be True or False, got 1"),
        ({"probability": 2}, "When: probability must be"),
    ],
)
def test_when_checks_its_parameters(kwargs, message):
    params = {"toxic": ResetPeer(), **kwargs}
    with pytest.raises(FaultParameterError, match=re.escape(message)):
        When(**params)
    # replace() checks the same way.
    with pytest.raises(FaultParameterError, match=re.escape(message)):
        When(ResetPeer()).replace(**kwargs)


def test_probability_zero_never_arms(multiconn_server: EchoServer, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(When(LimitData(bytes=0), probability=0.0), direction="upstream")
    (sock,), (handle,) = open_echoing(proxy, 1)
    sock.close()
    handle.wait_closed()
    assert "not applied" in handle.transcript


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("before_match", [True, False])
def test_match_is_found_across_any_chunking(
    multiconn_server: EchoServer, multiconn_proxy_factory, seed: int, before_match: bool
):
    # A seeded slicer ahead of the condition cuts the stream at different places per seed;
    # the trigger point must not move.
    proxy = multiconn_proxy_factory(multiconn_server, seed=seed)
    proxy.add(Slicer(average_size=3, size_variation=2), direction="upstream")
    proxy.add(
        When(LimitData(bytes=0), match=b"COMMIT", before_match=before_match), direction="upstream"
    )
    stream = b"BEGIN; COMMENT; COMMA; COMMIT; SELECT 1;"
    cut = stream.index(b"COMMIT") + (0 if before_match else len(b"COMMIT"))
    with connect(proxy.address) as sock:
        sock.sendall(stream)
        handle = proxy.wait_for_connection()
        handle.wait_closed()
    assert handle.stats()["to_server"] == cut
    assert f"condition met at byte {cut}" in handle.transcript


def test_after_bytes_then_match(multiconn_server: EchoServer, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    # The X inside the first 6 bytes does not count; the next one does.
    proxy.add(When(LimitData(bytes=0), after_bytes=6, match=b"X"), direction="upstream")
    with connect(proxy.address) as sock:
        sock.sendall(b"aXbcdefXgh")
        handle = proxy.wait_for_connection()
        handle.wait_closed()
    assert handle.stats()["to_server"] == len(b"aXbcdefX")


def test_after_bytes_added_live_counts_the_stream_not_from_when_it_was_added(
    multiconn_server: EchoServer, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server)
    (sock,), (handle,) = open_echoing(proxy, 1)  # 6 bytes each way already
    with sock:
        sock.sendall(b"0123456789")
        assert recv_exactly(sock, 10) == b"0123456789"  # 16 bytes downstream so far
        proxy.add(When(LimitData(bytes=0), after_bytes=10), direction="downstream")
        # The first 10 bytes of the direction went long ago: the next byte meets it.
        sock.sendall(b"abcdefghijklm")
        assert recv_until_eof(sock) == b""
    handle.wait_closed()
    assert handle.stats()["to_client"] == 16
    assert "condition met at byte 16" in handle.transcript


def test_after_bytes_zero_arms_at_the_first_byte_not_at_connect(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(When(ResetPeer(), after_bytes=0), direction="upstream")
        with connect(proxy.address) as sock:
            handle = proxy.wait_for_connection()
            server = target.accept()
            assert "condition met" not in handle.transcript  # no byte yet: nothing met
            assert not handle.closed
            sock.sendall(b"hello")
            # The chunk that met the condition goes first, then the reset.
            assert recv_exactly(server, 5) == b"hello"
            with pytest.raises(ConnectionResetError):
                recv_until_eof(server)
            handle.wait_closed()
    assert "condition met at the first byte" in handle.transcript
