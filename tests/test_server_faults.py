"""Server-side faults, each shown on the wire with plain blocking sockets as the client."""

from __future__ import annotations

import contextlib
import errno
import re
import selectors
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_multiconn import (
    ClosedPort,
    EchoServer,
    FaultyEchoServer,
    MultiConnClient,
    closed_port_address,
    wait_until,
)
from pytest_multiconn.faults import (
    AcceptThenClose,
    ChunkedEcho,
    CloseAfter,
    DelayEcho,
    ResetAfter,
    ServerFault,
    Stall,
    StopAccepting,
)

TIMEOUT = 5.0  # bound on every blocking socket call in this file

Factory = Callable[..., FaultyEchoServer]


@pytest.fixture
def faulty(multiconn_server_factory: Any) -> Factory:
    # The old engine, built directly while these tests move to the stream faults
    # (tests/test_server_stream_faults.py, tests/test_tls_layer.py).
    def make(*faults: ServerFault, **kwargs: Any) -> FaultyEchoServer:
        server: FaultyEchoServer = multiconn_server_factory.adopt(
            FaultyEchoServer(faults=faults, **kwargs))
        return server

    return make


@pytest.fixture
def sockets() -> Iterator[Callable[..., socket.socket]]:
    """``connect(address)``: a blocking client socket with a timeout, closed at teardown."""
    opened: list[socket.socket] = []

    def connect(address: tuple[str, int], timeout: float = TIMEOUT) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        opened.append(sock)
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(address)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def recv_exactly(sock: socket.socket, n: int) -> tuple[bytes, int]:
    """Read exactly ``n`` bytes; return them and how many recv() calls it took."""
    data = bytearray()
    calls = 0
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        calls += 1
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {n} bytes: {bytes(data)!r}")
        data += chunk
    return bytes(data), calls


def recv_to_end(sock: socket.socket, limit: int = 1 << 20) -> tuple[bytes, BaseException | None]:
    """Read until EOF or an error; return the bytes and the error (None for a clean EOF)."""
    data = bytearray()
    while len(data) <= limit:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, TimeoutError) as exc:
            return bytes(data), exc
        if not chunk:
            return bytes(data), None
        data += chunk
    raise AssertionError(f"more than {limit} bytes and no end")


PAYLOAD = bytes(range(48, 48 + 30))  # 30 distinct bytes, so a reorder or a loss shows


# -- DelayEcho ---------------------------------------------------------------------------------


def test_delay_echo_arrives_no_sooner_than_the_delay(faulty: Factory, sockets) -> None:
    server = faulty(DelayEcho(0.2))
    sock = sockets(server.address)
    t0 = time.monotonic()
    sock.sendall(b"hello")
    data, _ = recv_exactly(sock, 5)
    elapsed = time.monotonic() - t0
    assert data == b"hello"
    assert elapsed >= 0.2, f"echo came back after {elapsed:.3f}s, before the 0.2s delay"


def test_delay_with_jitter_never_reorders(faulty: Factory, sockets) -> None:
    server = faulty(DelayEcho(0.005, jitter=0.05))
    sock = sockets(server.address)
    messages = [f"<{i:03d}>".encode() for i in range(60)]
    for message in messages:
        sock.sendall(message)  # separate segments (TCP_NODELAY): separate delayed chunks
    expected = b"".join(messages)
    data, _ = recv_exactly(sock, len(expected))
    assert data == expected


def test_delay_echo_is_flushed_before_the_close_after_client_eof(faulty: Factory, sockets) -> None:
    server = faulty(DelayEcho(0.1))
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    data, error = recv_to_end(sock)
    assert (data, error) == (PAYLOAD, None)
    server.wait_for_closed(1)


def test_delayed_echo_to_a_client_that_never_reads_stays_bounded(faulty: Factory) -> None:
    # The delay outlasts the test, so everything the server reads waits in its queue: once
    # the queue passes high_water the server must stop reading, and the client's sends block.
    high_water = 32 * 1024
    server = faulty(DelayEcho(60.0), high_water=high_water)
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


# -- ChunkedEcho ---------------------------------------------------------------------------------


def test_chunked_echo_arrives_in_several_recvs_byte_exact(faulty: Factory, sockets) -> None:
    server = faulty(ChunkedEcho(max_chunk=3, delay=0.01))
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    data, calls = recv_exactly(sock, len(PAYLOAD))
    assert data == PAYLOAD
    assert calls >= 3, f"the echo came in {calls} recv() calls; chunks should spread it"
    sizes = [e.size for e in server.fault_events("send")]
    assert sum(sizes) == len(PAYLOAD)
    assert max(sizes) <= 3
    assert len(sizes) >= len(PAYLOAD) // 3


def test_chunked_echo_without_delay_caps_every_send(faulty: Factory, sockets) -> None:
    server = faulty(ChunkedEcho(max_chunk=5))
    sock = sockets(server.address)
    payload = bytes(range(256)) * 8
    sock.sendall(payload)
    data, _ = recv_exactly(sock, len(payload))
    assert data == payload
    sizes = [e.size for e in server.fault_events("send", conn=1)]
    assert sum(sizes) == len(payload)
    assert all(1 <= s <= 5 for s in sizes)
    assert len(set(sizes)) > 1, "chunk sizes should vary between 1 and max_chunk"


def chunk_sizes(server: FaultyEchoServer, sockets, payload: bytes) -> list[int]:
    sock = sockets(server.address)
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload))[0] == payload
    sock.close()
    server.wait_for_closed(1)
    return [e.size for e in server.fault_events("send")]


def test_fault_event_limit_keeps_the_newest_events(faulty: Factory, sockets) -> None:
    payload = bytes(range(200))
    kept = faulty(ChunkedEcho(max_chunk=1), fault_event_limit=50)
    # One byte a send: 200 events on connection 1, then 30 on connection 2; the newest 50
    # are kept, oldest first.
    chunk_sizes(kept, sockets, payload)
    chunk_sizes(kept, sockets, payload[:30])
    assert [(e.conn, e.size) for e in kept.fault_events()] == [(1, 1)] * 20 + [(2, 1)] * 30
    none = faulty(ChunkedEcho(max_chunk=1), fault_event_limit=0)
    assert chunk_sizes(none, sockets, payload) == []


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True, None])
def test_fault_event_limit_is_checked_where_given(bad: object) -> None:
    message = f"fault_event_limit must be an integer >= 0, got {bad!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        FaultyEchoServer(fault_event_limit=bad)  # type: ignore[arg-type]


def test_same_seed_same_chunks_other_seed_other_chunks(faulty: Factory, sockets) -> None:
    payload = bytes(200)
    first = chunk_sizes(faulty(ChunkedEcho(8), seed=1234), sockets, payload)
    again = chunk_sizes(faulty(ChunkedEcho(8), seed=1234), sockets, payload)
    other = chunk_sizes(faulty(ChunkedEcho(8), seed=4321), sockets, payload)
    assert first == again
    assert first != other
    assert sum(first) == sum(other) == len(payload)


def test_delay_and_chunks_compose(faulty: Factory, sockets) -> None:
    server = faulty(DelayEcho(0.1), ChunkedEcho(2, delay=0.005))
    sock = sockets(server.address)
    t0 = time.monotonic()
    sock.sendall(PAYLOAD)
    data, calls = recv_exactly(sock, len(PAYLOAD))
    assert time.monotonic() - t0 >= 0.1
    assert data == PAYLOAD
    assert calls >= 2
    assert max(e.size for e in server.fault_events("send")) <= 2


def test_a_large_echo_through_delay_and_chunks_is_exact(faulty: Factory) -> None:
    # Reader and writer interleave on one non-blocking socket: the server's delay queue,
    # chunked sends and flow control all run, and not one byte may move.
    server = faulty(DelayEcho(0.002, jitter=0.004), ChunkedEcho(4096), high_water=16 * 1024)
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


# -- CloseAfter / ResetAfter -------------------------------------------------------------------


def test_close_after_gives_exactly_n_bytes_then_eof(faulty: Factory, sockets) -> None:
    server = faulty(CloseAfter(10))
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    data, error = recv_to_end(sock)
    assert error is None, f"expected a clean EOF, got {error!r}"
    assert data == PAYLOAD[:10]
    server.wait_for_closed(1)
    assert [(e.action, e.size) for e in server.fault_events()] == [("close", 10)]


def test_close_after_counts_across_messages(faulty: Factory, sockets) -> None:
    server = faulty(CloseAfter(10))
    sock = sockets(server.address)
    sock.sendall(b"abcd")
    assert recv_exactly(sock, 4)[0] == b"abcd"
    sock.sendall(b"efghijklmnop")
    assert recv_to_end(sock) == (b"efghij", None)


def test_reset_after_gives_exactly_n_bytes_then_econnreset(faulty: Factory, sockets) -> None:
    server = faulty(ResetAfter(10))
    sock = sockets(server.address)
    sock.sendall(PAYLOAD)
    server.wait_for_closed(1)  # the RST has been sent: the client reads after it arrived
    data, error = recv_to_end(sock)
    assert data == PAYLOAD[:10]
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"


def test_close_after_zero_closes_when_the_first_echo_would_start(faulty: Factory, sockets) -> None:
    server = faulty(CloseAfter(0))
    sock = sockets(server.address)
    sock.sendall(b"x")
    assert recv_to_end(sock) == (b"", None)
    assert server.stats().bytes_out == 0


def test_reset_after_wins_over_the_clients_eof(faulty: Factory, sockets) -> None:
    # The EOF arrives while the slow chunks are still going out: the server plans a graceful
    # close, and the reset after the 4th byte must still happen.
    server = faulty(ChunkedEcho(1, delay=0.03), ResetAfter(4))
    sock = sockets(server.address)
    sock.sendall(b"abcd")  # exactly n: the last chunk empties the buffer as the cut starts
    sock.shutdown(socket.SHUT_WR)  # a plain echo server would answer this EOF with a FIN
    data, error = recv_to_end(sock)
    assert data == b"abcd"
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_faults_work_on_unix_sockets(faulty: Factory, tmp_path) -> None:
    server = faulty(ChunkedEcho(2, delay=0.002), CloseAfter(7), unix_path=tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(server.address)
        sock.sendall(PAYLOAD)
        assert recv_to_end(sock) == (PAYLOAD[:7], None)
    assert all(e.size <= 2 for e in server.fault_events("send"))


def test_multiconn_client_reports_a_short_echo(faulty: Factory) -> None:
    server = faulty(CloseAfter(5))
    results = MultiConnClient(server.address, 2, [b"0123456789"], timeout=TIMEOUT).run()
    assert not results.ok
    for result in results:
        assert result.received == 5
        assert "closed the connection after echoing 5 of 10 bytes" in (result.error or "")


# -- AcceptThenClose ---------------------------------------------------------------------------


def test_accept_then_close_gives_eof_before_any_data(faulty: Factory, sockets) -> None:
    server = faulty(AcceptThenClose())
    sock = sockets(server.address)  # connect() itself succeeds: the kernel accepted it
    server.wait_for_closed(1)
    assert recv_to_end(sock) == (b"", None)
    assert server.stats().bytes_in == 0


def test_accept_then_reset_gives_econnreset(faulty: Factory, sockets) -> None:
    server = faulty(AcceptThenClose(reset=True))
    # The RST may beat the client's connect() to the finish line: a connect with a timeout
    # (non-blocking underneath) then reports it itself.  Either way no byte ever arrives.
    try:
        sock = sockets(server.address)
    except ConnectionResetError:
        server.wait_for_closed(1)
        return
    server.wait_for_closed(1)
    data, error = recv_to_end(sock)
    assert data == b""
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"


# -- Stall ---------------------------------------------------------------------------------------


def test_stall_reads_but_never_answers_and_keeps_the_connection(faulty: Factory, sockets) -> None:
    server = faulty(Stall())
    sock = sockets(server.address, timeout=0.3)
    sock.sendall(b"anyone there?")
    server.wait_for_bytes(13)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    sock.shutdown(socket.SHUT_WR)  # even the client's EOF gets no answer, not even a FIN
    with pytest.raises(TimeoutError):
        sock.recv(100)
    stats = server.stats()
    assert (stats.open, stats.bytes_out) == (1, 0)
    assert server.connections()[0].eof_received


def test_stall_without_reading_makes_the_client_block(faulty: Factory) -> None:
    server = faulty(Stall(read=False))
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sock.setblocking(False)
        sent = 0
        for _ in range(2000):
            try:
                sent += sock.send(b"y" * 65536)
            except BlockingIOError:
                break
        else:
            pytest.fail(f"sends never blocked after {sent} bytes")
        server.wait_for_connections(1)
        stats = server.stats()
        assert stats.bytes_in == 0
        assert server.connections()[0].reading_paused
        assert sent > 0


# -- StopAccepting -------------------------------------------------------------------------------


def test_stop_accepting_keeps_old_clients_and_queues_new_ones(faulty: Factory, sockets) -> None:
    server = faulty()
    old = sockets(server.address)
    old.sendall(b"before")
    assert recv_exactly(old, 6)[0] == b"before"

    server.set_faults([StopAccepting()])
    new = sockets(server.address, timeout=0.3)  # the kernel completes the handshake ...
    new.sendall(b"hello?")
    with pytest.raises(TimeoutError):  # ... but nobody accepts, so nothing ever answers
        new.recv(10)
    assert server.stats().accepted == 1

    old.sendall(b"still here")  # connections accepted before keep working
    assert recv_exactly(old, 10)[0] == b"still here"

    server.set_faults([])  # accepting again: the queued connection is served
    new.settimeout(TIMEOUT)
    assert recv_exactly(new, 6)[0] == b"hello?"
    assert server.stats().accepted == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backlog semantics")
def test_stop_accepting_with_a_full_backlog_makes_connect_time_out(faulty: Factory) -> None:
    server = faulty(StopAccepting(backlog=0))
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
    assert outcomes[0] == "connected"
    assert outcomes[-1] == "timeout", outcomes
    assert server.stats().accepted == 0


# -- ClosedPort ----------------------------------------------------------------------------------


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


# -- set_faults, validation, repr ----------------------------------------------------------------


def test_faults_change_on_live_connections(faulty: Factory, sockets) -> None:
    server = faulty()
    sock = sockets(server.address)
    sock.sendall(b"plain")
    assert recv_exactly(sock, 5)[0] == b"plain"
    server.set_faults([CloseAfter(3)])
    sock.sendall(b"0123456789")
    assert recv_to_end(sock) == (b"012", None)


def test_new_faults_apply_only_to_new_connections_when_asked(faulty: Factory, sockets) -> None:
    server = faulty()
    old = sockets(server.address)
    server.set_faults([CloseAfter(2)], existing=False)
    old.sendall(b"abcdef")
    assert recv_exactly(old, 6)[0] == b"abcdef"
    new = sockets(server.address)
    new.sendall(b"abcdef")
    assert recv_to_end(new) == (b"ab", None)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DelayEcho(-1), "seconds"),
        (lambda: DelayEcho(float("nan")), "seconds"),
        (lambda: DelayEcho(0.1, jitter=True), "jitter"),
        (lambda: ChunkedEcho(0), "max_chunk"),
        (lambda: ChunkedEcho(2, delay=-0.5), "delay"),
        (lambda: CloseAfter(-1), "n_bytes"),
        (lambda: ResetAfter(1.5), "n_bytes"),
        (lambda: StopAccepting(backlog=-1), "backlog"),
    ],
)
def test_bad_fault_arguments_say_what_is_wrong(
    make: Callable[[], ServerFault], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_faults_and_seed_are_refused() -> None:
    with pytest.raises(TypeError, match="ServerFault objects"):
        FaultyEchoServer(faults=["DelayEcho(1)"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="seed"):
        FaultyEchoServer(seed="7")  # type: ignore[arg-type]


def test_reprs_name_the_faults(faulty: Factory) -> None:
    faults = [DelayEcho(0.1, jitter=0.2), ChunkedEcho(3, delay=0.01), Stall(read=False),
              CloseAfter(4), ResetAfter(5), AcceptThenClose(reset=True), StopAccepting(backlog=2)]
    assert [repr(f) for f in faults] == [
        "DelayEcho(seconds=0.1, jitter=0.2)", "ChunkedEcho(max_chunk=3, delay=0.01)",
        "Stall(read=False)", "CloseAfter(n_bytes=4)", "ResetAfter(n_bytes=5)",
        "AcceptThenClose(reset=True)", "StopAccepting(backlog=2)",
    ]
    server = faulty(DelayEcho(0.1), seed=99)
    assert "seed=99 faults=[DelayEcho(seconds=0.1)]" in repr(server)
    assert isinstance(server, EchoServer)


def test_removing_a_stall_closes_connections_whose_peer_already_left() -> None:
    # Found by the soak: Stall() swallows the client's EOF (a stalled server sends not even a
    # FIN); once set_faults([]) removed it, that connection stayed open for good.
    with FaultyEchoServer(faults=[Stall()]) as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"into the void")
        server.wait_for(
            lambda s: s.bytes_in == 13, 10, "the stalled server to read and drop the data"
        )
        assert server.stats().open == 1  # the stall holds it: that is the fault
        server.set_faults([])
        server.wait_for_idle(10)
