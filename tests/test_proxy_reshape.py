"""Corrupt, Substitute, Coalesce and Truncate on the wire: a real FaultProxy in front of an
EchoServer (or a raw target the test reads itself), over loopback."""

from __future__ import annotations

import select
from collections.abc import Callable

from helpers import connect, raw_target, recv_exactly
from pytest_multiconn import EchoServer, FaultProxy
from pytest_multiconn.faults import fault_rng
from pytest_multiconn.faults.toxics.corrupt import flips
from pytest_multiconn.lowlevel import wait_until
from pytest_multiconn.proxy import Coalesce, Corrupt, Slicer, Substitute, Truncate


def _echo_through(seed: int, toxic: Corrupt, payload: bytes) -> tuple[bytes, str]:
    with EchoServer() as server, FaultProxy(server.address, seed=seed) as proxy:
        proxy.add(toxic, direction="upstream")
        with connect(proxy.address) as client:
            client.sendall(payload)
            got = recv_exactly(client, len(payload))
        conn = proxy.wait_for_connection()
        return got, conn.transcript


def test_corrupt_flips_the_bits_the_seed_predicts_and_replays() -> None:
    payload = bytes(range(256)) * 16
    first, transcript = _echo_through(1234, Corrupt(rate=0.02), payload)
    again, _ = _echo_through(1234, Corrupt(rate=0.02), payload)
    other, _ = _echo_through(4321, Corrupt(rate=0.02), payload)
    assert first == again
    assert other != first
    # The proxy's rng for the first connection's upstream stage of "corrupt_upstream".
    rng = fault_rng(1234, "toxic", 1, "upstream", "corrupt_upstream")
    predicted = {}
    for offset, bit in flips(Corrupt(rate=0.02), rng):
        if offset >= len(payload):
            break
        predicted[offset] = bit
    seen = {i: (a ^ b).bit_length() - 1 for i, (a, b) in enumerate(zip(payload, first,
                                                                         strict=True)) if a != b}
    assert seen == predicted
    assert len(seen) > 20  # 4096 B at 2 %: about 80
    assert "corrupt_upstream[up]: flipped" in transcript


def test_corrupt_offsets_on_the_wire() -> None:
    payload = b"A" * 64
    got, transcript = _echo_through(5, Corrupt(offsets=(0, 63)), payload)
    changed = [i for i, (a, b) in enumerate(zip(payload, got, strict=True)) if a != b]
    assert changed == [0, 63]
    assert all(bin(payload[i] ^ got[i]).count("1") == 1 for i in changed)
    assert "offset:bit 0:" in transcript


def test_substitute_replaces_across_a_read_boundary_forced_by_a_slicer(
    multiconn_server: EchoServer, multiconn_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = multiconn_proxy_factory(multiconn_server)
    # The slicer goes first: the substitute stage is fed "BEG", "IN;", "COM", "MIT", ...
    proxy.add(Slicer(average_size=3, delay_us=2000), direction="upstream")
    proxy.add(Substitute(pattern=rb"COMMIT", replacement=b"ABORT!"), direction="upstream")
    request = b"BEGIN;COMMIT;END;"
    with connect(proxy.address) as client:
        client.sendall(request)
        assert recv_exactly(client, len(request)) == b"BEGIN;ABORT!;END;"
    transcript = proxy.wait_for_connection().transcript
    assert "slicer_upstream[up]: sliced into 6" in transcript
    assert "substitute_upstream[up]: replaced 1 match(es) of b'COMMIT' at offset 6" in transcript


def test_coalesce_delivers_many_small_sends_in_one_recv() -> None:
    with raw_target() as target, FaultProxy(target.address) as proxy:
        proxy.add(Coalesce(bytes=64, timeout_ms=10_000), direction="upstream")
        with connect(proxy.address) as client:  # TCP_NODELAY: each send is its own segment
            server_side = target.accept()
            conn = proxy.wait_for_connection()
            for i in range(63):
                client.send(bytes([i]))
            wait_until(lambda: conn.stats()["upstream"] >= 63, 5.0,
                       "the proxy to read the 63 one-byte sends")
            # Read by the proxy and held: without Coalesce the proxy would have written them
            # to the target in the same loop pass, so they would be readable now.
            readable, _, _ = select.select([server_side], [], [], 0)
            assert readable == []
            client.send(bytes([63]))
            first = server_side.recv(4096)  # bounded: the target's sockets time out
    assert first == bytes(range(64))
    assert "coalesced" in conn.transcript


def test_coalesce_flushes_on_eof() -> None:
    with raw_target() as target, FaultProxy(target.address) as proxy:
        proxy.add(Coalesce(bytes=1000, timeout_ms=10_000), direction="upstream")
        with connect(proxy.address) as client:
            server_side = target.accept()
            client.sendall(b"tail")
            client.shutdown(1)  # SHUT_WR
            assert server_side.recv(4096) == b"tail"
            assert server_side.recv(4096) == b""


def test_truncate_cuts_every_reply_and_the_connection_stays_open(
    multiconn_server: EchoServer, multiconn_proxy_factory: Callable[..., FaultProxy]
) -> None:
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(Truncate(bytes=4))  # downstream: the replies
    with connect(proxy.address) as client:
        for request in (b"first request", b"second one", b"ok", b"third request"):
            client.sendall(request)
            # Each reply is its prefix only; had the rest passed, the next reply would start
            # with it and this comparison would fail on the next round.
            assert recv_exactly(client, min(4, len(request))) == request[:4]
    conn = proxy.wait_for_connection()
    assert "truncate_downstream[down]: piece 1 cut to 4 B, dropped 9 B" in conn.transcript
    assert "piece 4 cut to 4 B, dropped 9 B" in conn.transcript
