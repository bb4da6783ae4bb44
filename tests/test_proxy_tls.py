"""The fault proxy in front of a TLS server: it relays ciphertext, its toxics act on records.

The proxy does not terminate TLS (like toxiproxy): the client's handshake goes through it to
the server.  So a toxic that cuts or delays the stream must leave the TLS session intact,
one that changes bytes must make TLS fail loudly on the client, and one that matches
plaintext must find nothing to match.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_multiconn import EchoServer, FaultProxy, MultiConnClient
from pytest_multiconn.faults.pipeline import Direction
from pytest_multiconn.faults.toxics import (
    Bandwidth,
    Corrupt,
    Latency,
    Slicer,
    Substitute,
    Toxic,
)

MESSAGES = [b"hello over tls", b" and again " * 40]


@pytest.fixture
def tls_server() -> Iterator[EchoServer]:
    with EchoServer(tls=True) as server:
        yield server


@pytest.fixture
def plain_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.mark.parametrize(
    "toxics",
    [
        [],
        [(Slicer(average_size=1), "upstream"), (Slicer(average_size=3), "downstream")],
        [(Latency(ms=5, jitter=5), "downstream"), (Slicer(average_size=7), "upstream")],
        [(Bandwidth(rate=64), "downstream")],
    ],
    ids=["none", "slicers", "latency+slicer", "bandwidth"],
)
def test_tls_session_survives_toxics_that_cut_and_delay(
    tls_server: EchoServer, toxics: list[tuple[Toxic, Direction]]
) -> None:
    with FaultProxy(tls_server.address, seed=11) as proxy:
        for toxic, direction in toxics:
            proxy.add(toxic, direction)
        results = MultiConnClient(
            proxy.address, 4, MESSAGES, tls=tls_server.client_tls, timeout=20
        ).run()
    results.check()
    assert all(r.received == sum(map(len, MESSAGES)) for r in results)
    # The handshake went through the proxy: it relayed more than the plaintext both ways.
    stats = proxy.stats()
    assert stats.accepted == 4
    assert stats.bytes_in > 4 * sum(map(len, MESSAGES))


def test_substitute_changes_plaintext_but_cannot_see_inside_tls(
    plain_server: EchoServer, tls_server: EchoServer
) -> None:
    substitute = Substitute(pattern=b"hello", replacement=b"HELLO")
    # Control: on a plain connection the proxy sees "hello" and rewrites the echo.
    with FaultProxy(plain_server.address, seed=3) as proxy:
        proxy.add(substitute, "downstream")
        plain = MultiConnClient(proxy.address, 1, [MESSAGES[0]], timeout=20).run()
    assert not plain.ok
    assert "echo differed at byte 0" in str(plain.failed[0])
    # Over TLS the same toxic sees only ciphertext: the echo arrives unchanged.
    with FaultProxy(tls_server.address, seed=3) as proxy:
        proxy.add(substitute, "downstream")
        MultiConnClient(proxy.address, 1, [MESSAGES[0]], tls=tls_server.client_tls,
                        timeout=20).run().check()


def _downstream_bytes(server: EchoServer) -> int:
    with FaultProxy(server.address, seed=5) as proxy:
        MultiConnClient(proxy.address, 1, MESSAGES, tls=server.client_tls, timeout=20
                        ).run().check()
        return proxy.stats().bytes_out


@pytest.mark.parametrize("where", ["handshake", "application data"])
def test_a_flipped_bit_in_a_tls_record_fails_the_client_loudly(
    tls_server: EchoServer, where: str
) -> None:
    # TLS 1.3 encrypts everything the server sends after its ServerHello (about 130 B), so
    # offset 400 is inside the encrypted handshake (certificate) and an offset 200 B before
    # the end of a clean run's downstream is inside the echoed application data (the echo
    # of MESSAGES is over 500 B, so record splitting that varies between runs cannot move
    # it past the end).  Either way the client must see a TLS error, never an altered echo.
    offset = 400 if where == "handshake" else _downstream_bytes(tls_server) - 200
    with FaultProxy(tls_server.address, seed=5) as proxy:
        proxy.add(Corrupt(offsets=(offset,)), "downstream")
        results = MultiConnClient(
            proxy.address, 1, MESSAGES, tls=tls_server.client_tls, timeout=20
        ).run()
    assert not results.ok
    failure = str(results.failed[0])
    assert "bad record mac" in failure or "TLSError" in failure, failure
