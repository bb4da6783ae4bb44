"""Server-side faults on the one engine (stream faults, ``faults/pipeline.py``), each shown on
the wire with plain blocking sockets as the client.

What the old server faults did, and what does it now (the CHANGELOG has the table):
``Latency`` delays the echo, ``Slicer`` cuts it into small sends, ``LimitData`` closes (or
with ``reset=True`` resets) after n bytes, ``LimitData(bytes=0)`` closes each connection as
it is accepted, an upstream ``Timeout(hold_eof=True)`` stalls, and ``pause_accepting()``
stops the listener.  TLS twins of these are in ``tests/test_tls_layer.py``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import re
import selectors
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import RawPlainClient, connect, recv_exactly, recv_to_end
from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.faults import (
    ClosedPort,
    Corrupt,
    FaultInfo,
    Latency,
    LimitData,
    Slicer,
    Timeout,
    Toxic,
    When,
    closed_port_address,
)
from pytest_multiconn.lowlevel import ConnectionInfo, wait_until

TIMEOUT = 5.0  # bound on every blocking socket call in this file

Factory = Callable[..., EchoServer]


@pytest.fixture
def faulty(multiconn_faulty_server_factory: Factory) -> Factory:
    return multiconn_faulty_server_factory


@pytest.fixture
def sockets() -> Iterator[Callable[..., socket.socket]]:
    """``connect(address)``: a blocking client socket with a timeout, closed at teardown."""
    opened: list[socket.socket] = []

    def connect_one(address: tuple[str, int], timeout: float = TIMEOUT) -> socket.socket:
        sock = connect(address, timeout=timeout)
        opened.append(sock)
        return sock

    yield connect_one
    for sock in opened:
        sock.close()


_OUT = re.compile(r"\bout\s+(\d+) B(?: in (\d+) ops)?")


def sends(info: ConnectionInfo) -> tuple[int, int]:
    """(bytes, send() calls) the server made on a connection, read from its transcript."""
    total = calls = 0
    for size, ops in _OUT.findall(info.transcript):
        total += int(size)
        calls += int(ops or 1)
    return total, calls


def closed_info(server: EchoServer) -> ConnectionInfo:
    server.wait_for_closed(1)
    [info] = server.recently_closed()
    return info


PAYLOAD = bytes(range(48, 48 + 30))  # 30 distinct bytes, so a reorder or a loss shows


# -- Latency: a delayed echo -------------------------------------------------------------------


def test_latency_echo_arrives_no_sooner_than_the_delay(faulty: Factory, sockets) -> None:
    server = faulty(Latency(ms=200))
    sock = sockets(server.address)
    t0 = time.monotonic()
    sock.sendall(b"hello")
    data = recv_exactly(sock, 5)
    elapsed = time.monotonic() - t0
    assert data == b"hello"
    assert elapsed >= 0.2, f"echo came back after {elapsed:.3f}s, before the 0.2s delay"


def test_latency_with_jitter_never_reorders(faulty: Factory, sockets) -> None:
    server = faulty(Latency(ms=5, jitter=50))
    sock = sockets(server.address)
    messages = [f"<{i:03d}>".encode() for i in range(60)]
    for message in messages:
        sock.sendall(message)  # separate segments (TCP_NODELAY): separate delayed chunks
    expected = b"".join(messages)
    data = recv_exactly(sock, len(expected))
    assert data == expected


def test_delayed_echo_is_flushed_before_the_close_after_client_eof(
    faulty: Factory, sockets
) -> None:
    server = faulty(Latency(ms=100))
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    data, error = recv_to_end(sock)
    assert (data, error) == (PAYLOAD, None)
    server.wait_for_closed(1)


def test_delayed_echo_to_a_client_that_never_reads_stays_bounded(faulty: Factory) -> None:
    # The delay outlasts the test, so everything the server reads waits in its pipe: once
    # that passes high_water the server must stop reading, and the client's sends block.
    high_water = 32 * 1024
    server = faulty(Latency(ms=60_000), high_water=high_water)
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sock.setblocking(False)
        block = b"x" * 65536
        sent = 0
        for _ in range(2000):  # bounded: the buffers fill long before 128 MiB
            try:
                sent += sock.send(block)
            except BlockingIOError:
                break
        else:
            pytest.fail(f"the client's sends never blocked after {sent} bytes")

        def paused() -> bool:
            conns = server.connections()
            return bool(conns) and conns[0].reading_paused

        wait_until(paused, TIMEOUT, "the server to stop reading", describe=server.connections)
        bytes_in = server.stats().bytes_in
        assert bytes_in <= high_water + 64 * 1024, "the server read far past its high-water mark"
        assert sent > bytes_in, "the backlog should be in the client's buffers, not the server"
        assert server.stats().bytes_out == 0


# -- Slicer: the echo in small sends -----------------------------------------------------------


def test_sliced_echo_is_byte_exact_in_many_sends(faulty: Factory, sockets) -> None:
    server = faulty(Slicer(average_size=2, size_variation=1, delay_us=10_000),
                    transcript_limit=1000)
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    data = recv_exactly(sock, len(PAYLOAD))
    assert data == PAYLOAD
    sock.close()
    info = closed_info(server)
    total, calls = sends(info)
    assert total == len(PAYLOAD)
    # Every piece is 1 to 3 bytes and leaves in a send() of its own.
    assert len(PAYLOAD) // 3 <= calls <= len(PAYLOAD), info.transcript
    assert "slicer_downstream[down]: sliced into" in info.transcript


def test_slicer_without_delay_caps_every_send(faulty: Factory, sockets) -> None:
    server = faulty(Slicer(average_size=3, size_variation=2), transcript_limit=1000)
    sock = sockets(server.address)
    payload = bytes(range(256)) * 8
    sock.sendall(payload)
    data = recv_exactly(sock, len(payload))
    assert data == payload
    sock.close()
    total, calls = sends(closed_info(server))
    assert total == len(payload)
    assert calls >= math.ceil(len(payload) / 5), f"{calls} sends: some carried more than 5 B"


def echo_through(server: EchoServer, sockets, payload: bytes) -> tuple[bytes, str]:
    """What a fresh server echoed to its one connection, and that connection's transcript."""
    sock = sockets(server.address)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    data, error = recv_to_end(sock)
    assert error is None, error
    return data, closed_info(server).transcript


def test_same_seed_same_faults_other_seed_other_faults(faulty: Factory, sockets) -> None:
    # Seeded on the wire: which bits Corrupt flips, and where Slicer cuts (its transcript
    # lines say into how many pieces).
    payload = bytes(2000)
    faults = (Corrupt(rate=0.05), Slicer(average_size=5, size_variation=4))
    first, first_log = echo_through(faulty(*faults, seed=1234), sockets, payload)
    again, again_log = echo_through(faulty(*faults, seed=1234), sockets, payload)
    other, other_log = echo_through(faulty(*faults, seed=4321), sockets, payload)
    assert len(first) == len(other) == len(payload)
    assert first != payload, "Corrupt(rate=0.05) flipped nothing in 2000 bytes"
    assert first == again
    assert first != other

    def pieces(log: str) -> list[str]:
        return re.findall(r"sliced into \d+", log)

    assert pieces(first_log) == pieces(again_log)
    assert pieces(first_log) != pieces(other_log)


def test_the_faulty_server_factory_seeds_each_server_of_a_test_apart(
    faulty: Factory, sockets
) -> None:
    # Without seed=, the k-th server of a test gets its own seed from the run seed, the
    # test's node id and k: two servers of one test differ; a rerun replays both.
    first = faulty(Corrupt(rate=0.05))
    second = faulty(Corrupt(rate=0.05))
    assert first.seed != second.seed
    assert echo_through(first, sockets, bytes(2000))[0] != \
        echo_through(second, sockets, bytes(2000))[0]


def test_latency_and_slicer_compose(faulty: Factory, sockets) -> None:
    server = faulty(Latency(ms=100), Slicer(average_size=2, delay_us=5000),
                    transcript_limit=1000)
    sock = sockets(server.address)
    t0 = time.monotonic()
    sock.sendall(PAYLOAD)
    data = recv_exactly(sock, len(PAYLOAD))
    assert time.monotonic() - t0 >= 0.1
    assert data == PAYLOAD
    sock.close()
    assert sends(closed_info(server)) == (len(PAYLOAD), len(PAYLOAD) // 2)


def test_a_large_echo_through_latency_and_slicer_is_exact(faulty: Factory) -> None:
    # Reader and writer interleave on one non-blocking socket: the server's delay queue,
    # sliced sends and flow control all run, and not one byte may move.
    server = faulty(Latency(ms=2, jitter=4), Slicer(average_size=4096), high_water=16 * 1024)
    payload = bytes(i * 7 % 251 for i in range(512 * 1024))

    with socket.create_connection(server.address, timeout=TIMEOUT) as sock, \
            selectors.DefaultSelector() as sel:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        got = bytearray()
        sent = 0
        deadline = time.monotonic() + 20
        while len(got) < len(payload):
            assert time.monotonic() < deadline, f"stuck: sent {sent}, got {len(got)}"
            for _, mask in sel.select(1.0):
                if mask & selectors.EVENT_WRITE and sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(payload[sent : sent + 65536])
                    if sent == len(payload):
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    chunk = sock.recv(65536)
                    assert chunk, f"EOF after {len(got)} bytes"
                    got += chunk
        assert bytes(got) == payload
    assert server.stats().peak_buffered <= 16 * 1024 + 64 * 1024 + 4096


# -- LimitData: close or reset after n bytes ---------------------------------------------------


def test_limit_data_gives_exactly_n_bytes_then_eof(faulty: Factory, sockets) -> None:
    server = faulty(LimitData(bytes=10))
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    data, error = recv_to_end(sock)
    assert error is None, f"expected a clean EOF, got {error!r}"
    assert data == PAYLOAD[:10]
    info = closed_info(server)
    assert "limit of 10 B reached: closing" in info.transcript
    assert info.bytes_out == 10


def test_limit_data_counts_across_messages(faulty: Factory, sockets) -> None:
    server = faulty(LimitData(bytes=10))
    sock = sockets(server.address)
    sock.sendall(b"abcd")
    assert recv_exactly(sock, 4) == b"abcd"
    sock.sendall(b"efghijklmnop")
    assert recv_to_end(sock) == (b"efghij", None)


def test_limit_data_reset_gives_exactly_n_bytes_then_econnreset(faulty: Factory, sockets) -> None:
    server = faulty(LimitData(bytes=10, reset=True))
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    info = closed_info(server)  # the RST has been sent: the client reads after it arrived
    data, error = recv_to_end(sock)
    assert data == PAYLOAD[:10]
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"
    assert "limit of 10 B reached: resetting" in info.transcript
    assert "sent RST" in info.transcript


def test_when_limit_zero_closes_when_the_first_echo_would_start(faulty: Factory, sockets) -> None:
    server = faulty(When(LimitData(bytes=0)))
    sock = sockets(server.address)
    sock.sendall(b"x")
    assert recv_to_end(sock) == (b"", None)
    info = closed_info(server)
    assert (info.bytes_in, info.bytes_out) == (1, 0)
    assert "condition met at the first byte" in info.transcript


def test_limit_data_reset_wins_over_the_clients_eof(faulty: Factory, sockets) -> None:
    # The EOF arrives while the slow pieces are still going out: the server plans a graceful
    # close, and the reset after the 4th byte must still happen, with no FIN before it.
    server = faulty(Slicer(average_size=1, delay_us=30_000), LimitData(bytes=4, reset=True))
    sock = sockets(server.address)
    sock.sendall(b"abcd")  # exactly n: the last piece reaches the limit
    sock.shutdown(socket.SHUT_WR)  # a plain echo server would answer this EOF with a FIN
    data, error = recv_to_end(sock)
    assert data == b"abcd"
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_faults_work_on_unix_sockets(faulty: Factory, tmp_path) -> None:
    server = faulty(Slicer(average_size=2, delay_us=2000), LimitData(bytes=7),
                    unix_path=tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(server.address)
        sock.sendall(PAYLOAD)
        assert recv_to_end(sock) == (PAYLOAD[:7], None)
    assert sends(closed_info(server)) == (7, 4)  # 2 + 2 + 2 + 1


def test_multiconn_client_reports_a_short_echo(faulty: Factory) -> None:
    server = faulty(LimitData(bytes=5))
    results = MultiConnClient(server.address, 2, [b"0123456789"], timeout=TIMEOUT).run()
    assert not results.ok
    for result in results:
        assert result.received == 5
        assert "closed the connection after echoing 5 of 10 bytes" in (result.error or "")


# -- accept, then close or reset: LimitData(bytes=0) -------------------------------------------


def test_limit_zero_closes_at_accept_before_any_data(faulty: Factory, sockets) -> None:
    server = faulty(LimitData(bytes=0))
    sock = sockets(server.address)  # connect() itself succeeds: the kernel accepted it
    info = closed_info(server)
    assert recv_to_end(sock) == (b"", None)
    assert (info.bytes_in, info.bytes_out) == (0, 0)
    assert "limit of 0 B reached: closing" in info.transcript


def test_limit_zero_reset_resets_at_accept(faulty: Factory, sockets) -> None:
    server = faulty(LimitData(bytes=0, reset=True))
    # The RST may beat the client's connect() to the finish line: a connect with a timeout
    # (non-blocking underneath) then reports it itself.  Either way no byte ever arrives.
    try:
        sock = sockets(server.address)
    except ConnectionResetError:
        server.wait_for_closed(1)
        return
    info = closed_info(server)
    data, error = recv_to_end(sock)
    assert data == b""
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"
    assert "sent RST" in info.transcript


# -- stall: an upstream Timeout ----------------------------------------------------------------


def test_stall_reads_but_never_answers_and_keeps_the_connection(faulty: Factory, sockets) -> None:
    server = faulty()
    server.add(Timeout(hold_eof=True), direction="upstream")
    sock = sockets(server.address, timeout=0.3)
    sock.sendall(b"anyone there?")
    server.wait_for_bytes(13)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    sock.shutdown(socket.SHUT_WR)  # even the client's EOF gets no answer, not even a FIN

    def eof_seen() -> bool:
        return bool(server.connections()) and server.connections()[0].eof_received

    wait_until(eof_seen, TIMEOUT, "the server to read the client's EOF",
               describe=server.connections)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    stats = server.stats()
    assert (stats.open, stats.bytes_out) == (1, 0)


def test_stall_without_reading_makes_the_client_block(faulty: Factory) -> None:
    # What comes in is held for a minute: past the (tiny) high-water mark the server stops
    # reading, so the client's sends block once the kernel buffers are full.
    server = faulty(high_water=1)
    server.add(Latency(ms=60_000), direction="upstream")
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sent = RawPlainClient(sock).send_until_blocked(b"y" * 65536, 2000 * 65536)
        server.wait_for_connections(1)
        [info] = server.connections()
        assert info.reading_paused
        assert info.bytes_out == 0
        assert sent > info.bytes_in, "the backlog should be in the kernel, not the server"


def test_removing_a_stall_closes_connections_whose_peer_already_left(faulty: Factory) -> None:
    # Found by the soak: a stall swallows the client's EOF (a stalled server sends not even a
    # FIN); once the stall is removed, that connection must still close.
    server = faulty()
    name = server.add(Timeout(hold_eof=True), direction="upstream")
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"into the void")
    server.wait_for(lambda s: s.bytes_in == 13, 10, "the stalled server to read and drop the data")

    def eof_seen() -> bool:
        return bool(server.connections()) and server.connections()[0].eof_received

    wait_until(eof_seen, TIMEOUT, "the server to read the client's EOF",
               describe=server.connections)
    assert server.stats().open == 1  # the stall holds it: that is the fault
    server.remove(name)
    server.wait_for_idle(10)


# -- stop accepting: pause_accepting() ---------------------------------------------------------


def test_pause_accepting_keeps_old_clients_and_queues_new_ones(faulty: Factory, sockets) -> None:
    server = faulty()
    old = sockets(server.address)
    old.sendall(b"before")
    assert recv_exactly(old, 6) == b"before"

    server.pause_accepting()
    assert not server.accepting
    new = sockets(server.address, timeout=0.3)  # the kernel completes the handshake ...
    new.sendall(b"hello?")
    with pytest.raises(TimeoutError):  # ... but nobody accepts, so nothing ever answers
        new.recv(10)
    assert server.stats().accepted == 1

    old.sendall(b"still here")  # connections accepted before keep working
    assert recv_exactly(old, 10) == b"still here"

    server.resume_accepting()  # accepting again: the queued connection is served
    new.settimeout(TIMEOUT)
    assert recv_exactly(new, 6) == b"hello?"
    assert server.stats().accepted == 2


def full_backlog_outcomes(server: EchoServer) -> list[str]:
    socks: list[socket.socket] = []
    outcomes: list[str] = []
    try:
        for _ in range(4):  # Linux queues backlog + 1 = 1 connection, then drops SYNs
            sock = socket.socket()
            socks.append(sock)
            sock.settimeout(0.3)
            try:
                sock.connect(server.address)
                outcomes.append("connected")
            except TimeoutError:
                outcomes.append("timeout")
                break
    finally:
        for sock in socks:
            sock.close()
    return outcomes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backlog semantics")
def test_pause_accepting_with_a_full_backlog_makes_connect_time_out(faulty: Factory) -> None:
    server = faulty()
    server.pause_accepting(backlog=0)
    outcomes = full_backlog_outcomes(server)
    assert outcomes[0] == "connected"
    assert outcomes[-1] == "timeout", outcomes
    assert server.stats().accepted == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backlog semantics")
def test_pause_accepting_before_start(multiconn_server_factory: Any, sockets) -> None:
    # Paused before start(): the listener never accepts, from its first connection on; the
    # kernel queues one connection (backlog 0), and resuming serves it.
    server = EchoServer()
    server.pause_accepting(backlog=0)
    multiconn_server_factory.adopt(server)
    queued = sockets(server.address)
    queued.sendall(b"queued")
    with socket.socket() as late:
        late.settimeout(0.3)
        with pytest.raises(TimeoutError):
            late.connect(server.address)
    assert server.stats().accepted == 0
    server.resume_accepting()
    assert recv_exactly(queued, 6) == b"queued"


# -- ClosedPort --------------------------------------------------------------------------------


def test_closed_port_refuses_connections_and_holds_the_port() -> None:
    with ClosedPort() as closed:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(closed.address, timeout=TIMEOUT).close()
        with socket.socket() as other, pytest.raises(OSError, match="in use") as info:
            other.bind(closed.address)  # nobody else can take the port meanwhile
        assert info.value.errno == errno.EADDRINUSE
        assert "ClosedPort 127.0.0.1:" in repr(closed)
    assert closed.closed
    assert "released" in repr(closed)


def test_closed_port_address_helper_and_client(multiconn_closed_port) -> None:
    results = MultiConnClient(multiconn_closed_port, 1, timeout=TIMEOUT).run()
    assert not results.ok
    assert "ConnectionRefusedError" in (results[0].error or "")
    with closed_port_address() as address, pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=TIMEOUT).close()


# -- faults at run time, validation, repr ------------------------------------------------------


def test_faults_change_on_live_connections(faulty: Factory, sockets) -> None:
    server = faulty()
    sock = sockets(server.address)
    sock.sendall(b"plain")
    assert recv_exactly(sock, 5) == b"plain"
    server.add(LimitData(bytes=3))
    sock.sendall(b"0123456789")
    assert recv_to_end(sock) == (b"012", None)


def test_the_transcript_keeps_what_the_faults_did_within_its_limit(
    faulty: Factory, sockets
) -> None:
    # The old engine kept a separate event list (fault_events, fault_event_limit); what the
    # faults do is now in each connection's transcript, bounded by transcript_limit (the
    # first entry and the newest are kept).
    server = faulty(Slicer(average_size=1, delay_us=1000), transcript_limit=6)
    sock = sockets(server.address)
    for i in range(10):
        sock.sendall(b"%d" % i)
        assert recv_exactly(sock, 1) == b"%d" % i
    sock.close()
    info = closed_info(server)
    lines = info.transcript.splitlines()
    assert "earlier entries dropped" in lines[1]
    assert len(lines) == 6 + 1
    assert "close" in lines[-1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Latency(ms=-1), "ms"),
        (lambda: Latency(ms=float("nan")), "ms"),
        (lambda: Latency(ms=1, jitter=True), "jitter"),
        (lambda: Slicer(average_size=0), "average_size"),
        (lambda: Slicer(average_size=2, delay_us=-0.5), "delay_us"),
        (lambda: LimitData(bytes=-1), "bytes"),
        (lambda: LimitData(bytes=1.5), "bytes"),
        (lambda: LimitData(bytes=1, reset="yes"), "reset"),
        (lambda: EchoServer().pause_accepting(backlog=-1), "backlog"),
        (lambda: EchoServer().pause_accepting(backlog=True), "backlog"),
        (lambda: EchoServer().pause_accepting(backlog=2**40), "backlog"),  # listen() takes an int
    ],
)
def test_bad_fault_arguments_say_what_is_wrong(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_faults_and_seed_are_refused() -> None:
    with pytest.raises(TypeError, match="stream faults such as Latency"):
        EchoServer(faults=["Latency(ms=1)"])  # type: ignore[list-item]
    for seed in ("7", True, -1, 1.5, 2**64):
        with pytest.raises(ValueError, match=re.escape(f"seed must be an integer from 0 to "
                                                       f"2**64 - 1 or None (the run seed), "
                                                       f"got {seed!r}")):
            EchoServer(seed=seed)  # type: ignore[arg-type]


def test_reprs_name_the_faults(faulty: Factory) -> None:
    faults: list[Toxic] = [
        Latency(ms=100, jitter=200), Slicer(average_size=3, delay_us=10_000),
        Timeout(hold_eof=True), LimitData(bytes=4), LimitData(bytes=5, reset=True),
    ]
    assert [repr(f) for f in faults] == [
        "Latency(ms=100, jitter=200)", "Slicer(average_size=3, delay_us=10000)",
        "Timeout(hold_eof=True)", "LimitData(bytes=4)", "LimitData(bytes=5, reset=True)",
    ]
    server = faulty(Latency(ms=100), seed=99)
    assert server.seed == 99
    assert server.faults() == [FaultInfo("latency_downstream", Latency(ms=100), "downstream",
                                         1.0)]
    assert isinstance(server, EchoServer)


def test_limit_data_reset_delivers_every_byte_before_the_rst_to_a_reading_client(
    faulty: Factory,
) -> None:
    # An RST makes the kernel drop what it has not delivered.  Forced here: the client stops
    # reading 512 KiB before the limit (its receive buffer is 64 KiB), so when the server
    # reaches the limit the last bytes wait in its output buffer and kernel send queue; only
    # then does the client read on.  The reset waits for them (bounded), so all n arrive.
    limit = 4 << 20
    hold = 512 << 10
    server = faulty(LimitData(bytes=limit, reset=True), high_water=2 << 20)
    payload = bytes(i * 7 % 251 for i in range(limit))
    got = bytearray()
    with connect(server.address, rcvbuf=1 << 16) as sock, \
            selectors.DefaultSelector() as sel:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        sent = 0
        deadline = time.monotonic() + 30
        while len(got) < limit - hold:  # echo flowing both ways, as a reading client does
            assert time.monotonic() < deadline, f"stuck: sent {sent}, got {len(got)}"
            for _, mask in sel.select(1.0):
                if mask & selectors.EVENT_WRITE and sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(payload[sent : sent + 65536])
                    if sent == len(payload):
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    chunk = sock.recv(1 << 20)
                    assert chunk, f"EOF after {len(got)} bytes"
                    got += chunk
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        sock.sendall(payload[sent:])  # the server reads it all: its output stays below high_water

        def limit_reached() -> bool:
            conns = server.connections() + server.recently_closed()
            return any("limit of" in c.transcript for c in conns)

        wait_until(limit_reached, TIMEOUT, "the server to reach the limit",
                   describe=server.connections)
        data, error = recv_to_end(sock, limit=limit)
    got += data
    assert isinstance(error, ConnectionResetError), error
    assert len(got) == limit, f"got {len(got)} of the {limit} bytes before the RST"
    assert bytes(got) == payload
