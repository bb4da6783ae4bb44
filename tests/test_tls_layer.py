"""Every server fault and every client fault, in plaintext and over TLS, checked on the wire.

TLS is a layer under the connection (``conn.layer``): the faults act on plaintext above it,
through the same code in both modes.  Server faults are watched by a raw blocking client (an
``ssl``-wrapped socket in TLS mode, which reads one TLS record per ``recv()``); client faults
by the server (its observer and counters).  Timing checks are lower bounds only.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import (
    WAIT,
    Raw,
    RawPlainClient,
    RawTLSClient,
    connect,
    recv_exactly,
    recv_to_end,
)
from pytest_multiconn import EchoServer, MultiConnClient, TLSConfig
from pytest_multiconn.client import DEFAULT_MESSAGES
from pytest_multiconn.faults import (
    Burst,
    ClientFault,
    ClientReset,
    ConnectClose,
    Garbage,
    HalfClose,
    Latency,
    LimitData,
    NeverClose,
    NeverRead,
    NoCloseNotify,
    PartialSend,
    ResetPeer,
    Silent,
    Slicer,
    SlowReader,
    StallHandshake,
    Timeout,
    When,
)
from pytest_multiconn.lowlevel import Connection
from pytest_multiconn.tls import TLSLayer

MODES = ("plain", "tls")
PAYLOAD = bytes(range(48, 48 + 30))  # 30 distinct bytes: a reorder or a loss shows

Factory = Callable[..., Any]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tls_for(mode: str, multiconn_tls: TLSConfig) -> TLSConfig | None:
    return multiconn_tls if mode == "tls" else None


@pytest.fixture
def faulty(
    multiconn_faulty_server_factory: Factory, tls_for: TLSConfig | None
) -> Callable[..., EchoServer]:
    def make(*faults: Any, **kwargs: Any) -> EchoServer:
        if tls_for is not None:
            kwargs.setdefault("tls", tls_for)
        server: EchoServer = multiconn_faulty_server_factory(*faults, **kwargs)
        return server

    return make


@pytest.fixture
def echo(
    multiconn_server_factory: Factory, tls_for: TLSConfig | None
) -> Callable[..., EchoServer]:
    def make(**kwargs: Any) -> EchoServer:
        if tls_for is not None:
            kwargs.setdefault("tls", tls_for)
        server: EchoServer = multiconn_server_factory(**kwargs)
        return server

    return make


@pytest.fixture
def raw(tls_for: TLSConfig | None) -> Iterator[Callable[..., Raw]]:
    """``raw(server)``: a blocking raw client (TLS in TLS mode), closed at teardown."""
    opened: list[Raw] = []

    def open_raw(server: EchoServer, timeout: float = WAIT, *, handshake: bool = True) -> Raw:
        sock = connect(server.address, timeout=timeout)
        client: Raw
        if tls_for is None:
            client = RawPlainClient(sock)
            opened.append(client)
            return client
        client = RawTLSClient(sock, tls_for.client_context)
        opened.append(client)
        if handshake:
            client.do_handshake()
        return client

    yield open_raw
    for client in opened:
        client.close()


def _layers(server: EchoServer) -> list[type[Any] | None]:
    return server.loop.run_sync(
        lambda: [type(c.layer) if c.layer is not None else None for c in server._conns.values()]
    )


# -- the layer itself --------------------------------------------------------------------------


def test_every_connection_class_gets_the_layer_not_a_new_class(
    mode: str, faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(Slicer(average_size=1000))
    sock = raw(server)
    sock.sendall(b"x")
    assert recv_exactly(sock, 1) == b"x"
    assert _layers(server) == ([TLSLayer] if mode == "tls" else [None])
    # The connection class is the general echo's own: no class is built at run time.
    names = server.loop.run_sync(lambda: [type(c).__name__ for c in server._conns.values()])
    assert names == ["EchoConnection"]


def test_a_layer_cannot_be_set_once_the_connection_runs(multiconn_server: EchoServer) -> None:
    loop = multiconn_server.loop
    a, b = socket.socketpair()
    with b:

        def attach_then_layer() -> str:
            conn = Connection(loop, a)
            conn.attach()
            try:
                conn.use_layer(object())  # type: ignore[arg-type]  # refused before it is used
            except RuntimeError as exc:
                return str(exc)
            finally:
                conn.close()
            return "accepted"

        assert "before the connection starts" in loop.run_sync(attach_then_layer)


# -- server faults, seen by a raw client ------------------------------------------------------


def test_delay_echo_arrives_no_sooner_than_the_delay(
    faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(Latency(ms=200))
    sock = raw(server)
    t0 = time.monotonic()
    sock.sendall(PAYLOAD)
    data = recv_exactly(sock, len(PAYLOAD))
    assert data == PAYLOAD
    assert time.monotonic() - t0 >= 0.2


def test_chunked_echo_caps_every_chunk_at_three_bytes(
    mode: str, faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(Slicer(average_size=2, size_variation=1))
    sock = raw(server)
    sock.sendall(PAYLOAD)
    sizes: list[int] = []
    data = recv_exactly(sock, len(PAYLOAD), sizes=sizes)
    assert data == PAYLOAD
    [info] = server.connections()
    # The faults ran in both modes, above the layer: the server's sends are the slices.
    assert info.bytes_out == len(PAYLOAD)
    if mode == "tls":
        # One TLS record per slice, and the client's SSL_read returns one record per recv():
        # what the client sees on the wire is the slicing itself.
        assert max(sizes) <= 3
        assert len(sizes) >= len(PAYLOAD) // 3


def test_chunked_echo_with_a_delay_spreads_the_echo_out(
    faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(Slicer(average_size=10, delay_us=50_000))
    sock = raw(server)
    t0 = time.monotonic()
    sock.sendall(PAYLOAD)
    assert recv_exactly(sock, len(PAYLOAD)) == PAYLOAD
    assert time.monotonic() - t0 >= 2 * 0.05  # three slices of 10, 50 ms apart


def test_close_after_gives_exactly_n_bytes_then_a_clean_eof(
    mode: str, faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(LimitData(bytes=10))
    sock = raw(server)
    sock.sendall(PAYLOAD)
    # Over TLS a clean end means close_notify before the FIN (a bare FIN raises SSLEOFError).
    assert recv_to_end(sock) == (PAYLOAD[:10], None)
    server.wait_for_closed(1)
    if mode == "tls":
        [info] = server.recently_closed()
        assert "close_notify sent" in info.transcript


def test_reset_after_gives_exactly_n_bytes_then_a_reset(
    faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(When(ResetPeer(drop=True), after_bytes=10))
    sock = raw(server)
    sock.sendall(PAYLOAD)
    data, error = recv_to_end(sock)
    assert data == PAYLOAD[:10]
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"


def test_accept_then_close_gives_eof_before_any_data(
    faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(LimitData(bytes=0))
    sock = raw(server)
    server.wait_for_closed(1)
    assert recv_to_end(sock) == (b"", None)
    assert server.stats().bytes_in == 0


def test_accept_then_reset_gives_a_reset(
    faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(ResetPeer())
    try:
        sock = raw(server)
    except ConnectionResetError:
        # The RST beat the client's connect (or its TLS handshake) to the finish line.
        server.wait_for_closed(1)
        return
    server.wait_for_closed(1)
    data, error = recv_to_end(sock)
    assert data == b""
    assert isinstance(error, ConnectionResetError), f"expected ECONNRESET, got {error!r}"


def test_stall_reads_but_never_answers(
    faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty(Timeout())
    sock = raw(server, timeout=0.3)
    sock.sendall(b"anyone there?")
    server.wait_for_bytes(13)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    stats = server.stats()
    assert (stats.open, stats.bytes_out) == (1, 0)


def test_stall_without_reading_makes_the_client_block(
    faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty()
    # Holds what comes in (a minute): past the high-water mark the server stops reading.
    server.add(Latency(ms=60_000), direction="upstream")
    sock = raw(server)
    sent = sock.send_until_blocked(b"y" * 65536, limit=1 << 30)
    assert sent > 0
    server.wait_for_connections(1)
    [info] = server.connections()
    assert info.reading_paused
    assert info.bytes_out == 0


def test_stop_accepting_queues_new_clients_until_removed(
    mode: str, faulty: Callable[..., EchoServer], raw: Callable[..., Raw]
) -> None:
    server = faulty()
    old = raw(server)
    server.pause_accepting()
    new = raw(server, timeout=0.3, handshake=False)  # the kernel completes TCP's handshake
    if isinstance(new, RawTLSClient):
        with pytest.raises(TimeoutError):  # nobody accepts, so nobody answers the TLS hello
            new.do_handshake()
    else:
        new.sendall(b"hello?")
        with pytest.raises(TimeoutError):
            new.recv(10)
    assert server.stats().accepted == 1
    old.sendall(b"still here")
    assert recv_exactly(old, 10) == b"still here"

    server.resume_accepting()
    new.settimeout(WAIT)
    if isinstance(new, RawTLSClient):
        new.do_handshake()
        new.sendall(b"hello?")
    assert recv_exactly(new, 6) == b"hello?"
    assert server.stats().accepted == 2


# -- client faults, seen by the server -------------------------------------------------------


def _observed(chunks: list[int]) -> Callable[[str, Any, bytes | None], None]:
    def observe(event: str, conn: Any, data: bytes | None) -> None:
        if event == "data" and data is not None:
            chunks.append(len(data))

    return observe


def _client(server: EchoServer, n: int, *faults: ClientFault, **kwargs: Any) -> MultiConnClient:
    kwargs.setdefault("timeout", 20)
    return MultiConnClient(server.address, n, tls=server.client_tls, faults=list(faults), **kwargs)


def test_partial_send_arrives_as_many_small_pieces(
    mode: str, echo: Callable[..., EchoServer]
) -> None:
    chunks: list[int] = []
    server = echo(on_event=_observed(chunks))
    payload = bytes(range(256)) + bytes(range(44))
    # A pause of up to 4 ms after each of about 150 sends: the server reads between them.
    [result] = _client(server, 1, PartialSend(max_chunk=3, delay=0.004), messages=[payload]).run()
    assert result.matched, result
    # The client's send hook saw every capped send, in both modes.
    assert sum(result.send_sizes) == len(payload)
    assert max(result.send_sizes) <= 3
    assert sum(chunks) == len(payload)
    if mode == "tls":
        assert max(chunks) <= 3  # one record per send; the server reads one record at a time
    else:
        assert len(chunks) > 1  # TCP may merge what arrived between two reads, not all of it


def test_slow_reader_takes_at_least_its_rate(echo: Callable[..., EchoServer]) -> None:
    server = echo()
    payload = os.urandom(64 * 1024)
    rate = 256 * 1024
    t0 = time.monotonic()
    [result] = _client(server, 1, SlowReader(bytes_per_second=rate), messages=[payload]).run()
    assert result.matched, result
    # It reads rate/20 bytes, then waits for them to "drain" at the rate: a lower bound.
    assert time.monotonic() - t0 >= (len(payload) - rate // 20) / rate
    assert server.wait_for_closed(1).bytes_in == len(payload)


def test_never_read_makes_the_server_stop_reading(echo: Callable[..., EchoServer]) -> None:
    server = echo(high_water=64 * 1024)
    size = 64 * 1024 * 1024
    with _client(server, 1, NeverRead(size=size), keep_open=True) as client:
        [result] = client.run()
        assert result.matched, result
        [info] = server.connections()
        assert info.reading_paused
        assert info.bytes_in < size


def test_never_close_stays_open_until_the_client_closes(echo: Callable[..., EchoServer]) -> None:
    server = echo()
    with _client(server, 2, NeverClose(), keep_open=True) as client:
        results = client.run()
        results.check()
        stats = server.wait_for_bytes(2 * len(b"".join(DEFAULT_MESSAGES)))
        assert (stats.open, stats.closed) == (2, 0)
    assert server.wait_for_closed(2).open == 0


def test_silent_connects_and_sends_nothing(echo: Callable[..., EchoServer]) -> None:
    server = echo()
    with _client(server, 2, Silent(), keep_open=True) as client:
        client.run().check()
        stats = server.wait_for_connections(2)
        assert stats.bytes_in == 0
    server.wait_for_closed(2)


def test_half_close_reaches_the_server_as_eof_after_the_data(
    mode: str, echo: Callable[..., EchoServer]
) -> None:
    server = echo()
    payload = os.urandom(256 * 1024)
    [result] = _client(server, 1, HalfClose(), messages=[payload]).run()
    assert result.matched, result
    stats = server.wait_for_closed(1)
    [info] = server.recently_closed()
    # The server read an end of stream (not a reset), and still echoed every byte before it
    # closed in turn.
    assert info.eof_received
    assert info.close_reason == "finished"
    assert info.bytes_in == len(payload) == info.bytes_out
    if mode == "tls":
        assert stats.tls_ragged_eofs == 0  # close_notify came before the FIN


def test_reset_mid_message_is_a_peer_error_on_the_server(echo: Callable[..., EchoServer]) -> None:
    server = echo()
    payload = bytes(range(256)) * 4
    results = _client(server, 2, ClientReset("mid"), messages=[payload]).run()
    results.check()
    stats = server.wait_for_closed(2)
    assert stats.peer_errors == 2
    assert stats.bytes_in < 2 * len(payload)


def test_garbage_is_echoed_byte_exact(echo: Callable[..., EchoServer]) -> None:
    server = echo()
    results = _client(server, 2, Garbage(16 * 1024)).run()
    results.check()
    assert server.wait_for_closed(2).bytes_in == 2 * 16 * 1024


def test_burst_opens_every_connection(echo: Callable[..., EchoServer]) -> None:
    server = echo()
    results = _client(server, 1, Burst(24)).run()
    results.check()
    assert len(results) == 24
    assert server.wait_for_closed(24).accepted == 24


def test_connect_close_is_shrugged_off(mode: str, echo: Callable[..., EchoServer]) -> None:
    server = echo()
    _client(server, 3, ConnectClose()).run().check()
    stats = server.wait_for_closed(3)
    assert (stats.bytes_in, stats.peer_errors) == (0, 0)
    if mode == "tls":
        assert stats.tls_handshakes == 3  # it closes once connected: after the handshake
    _client(server, 1).run().check()  # and the server still serves


@pytest.mark.parametrize("fault", [StallHandshake(), NoCloseNotify()], ids=lambda f: f.name)
def test_tls_client_faults_need_tls_and_act_on_the_layer(
    mode: str, fault: ClientFault, echo: Callable[..., EchoServer], multiconn_tls: TLSConfig
) -> None:
    if mode == "plain":
        server = echo()
        with pytest.raises(TypeError, match="TLS fault"):
            _client(server, 1, fault).run()
        return
    server = echo(tls=multiconn_tls.replace(handshake_timeout=0.3))
    results = _client(server, 2, fault).run()
    results.check()
    stats = server.wait_for_closed(2)
    if isinstance(fault, StallHandshake):
        assert (stats.tls_handshakes, stats.tls_failures) == (0, 2)  # dropped at its timeout
        assert all("dropped the stalled TLS handshake" in r.note for r in results)
    else:
        assert (stats.tls_handshakes, stats.tls_ragged_eofs) == (2, 2)

