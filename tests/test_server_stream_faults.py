"""Every server takes the proxy's stream faults: one engine (``faults/pipeline.py``).

``EchoServer(faults=[Latency(ms=150)])`` / ``ProtocolServer(handler, faults=[...])`` act on
what the server sends ("downstream"); ``server.add(fault, direction=...)``, ``update()``,
``remove()``, ``clear()`` and ``faults()`` work as on ``FaultProxy``, on live connections
too; "upstream" acts on what the server receives, before the handler.  Over TLS the faults
act on the plaintext, above the TLS layer.  Real loopback sockets, no sleeps; timings are
bounds far from each other (150 ms of latency against a plain round trip far below 100 ms).
"""

from __future__ import annotations

import socket
import ssl
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pytest

from helpers import RawTLSClient, connect, recv_exactly, recv_to_end
from pytest_multiconn import EchoServer
from pytest_multiconn.faults import FaultInfo, Latency, ResetPeer, When
from pytest_multiconn.servers import ProtocolServer
from pytest_multiconn.servers.echo import EchoProtocol
from pytest_multiconn.tls import TLSConfig

LATENCY = 0.15
PLAIN_BOUND = 0.1


@dataclass
class Setup:
    """What ``tls=`` a server gets, and the client context that trusts it."""

    tls: TLSConfig | ssl.SSLContext | None
    client: ssl.SSLContext | None

    def server(self, cls: Any = EchoServer, *args: Any, **kwargs: Any) -> Any:
        return cls(*args, tls=self.tls, **kwargs)

    def connect(self, server: ProtocolServer) -> socket.socket:
        sock = connect(server.address)
        if self.client is None:
            return sock
        return self.client.wrap_socket(sock, server_hostname="localhost")

    def raw(self, server: ProtocolServer) -> Any:
        """A client that shows the socket's own errors (an RST is ConnectionResetError, also
        over TLS, where ``wrap_socket`` reports it as an EOF)."""
        sock = connect(server.address)
        if self.client is None:
            return sock
        client = RawTLSClient(sock, self.client)
        client.do_handshake()
        return client


@pytest.fixture(params=["plain", "TLSConfig", "SSLContext"])
def setup(request: pytest.FixtureRequest) -> Setup:
    if request.param == "plain":
        return Setup(None, None)
    config = TLSConfig()
    if request.param == "TLSConfig":
        return Setup(config, config.client_context)
    return Setup(config.server_context, config.client_context)


def round_trip(sock: socket.socket, message: bytes = b"ping") -> float:
    start = time.monotonic()
    sock.sendall(message)
    assert recv_exactly(sock, len(message)) == message
    return time.monotonic() - start


def median_round_trip(sock: socket.socket, n: int = 5) -> float:
    return statistics.median(round_trip(sock, b"m%d" % i) for i in range(n))


def test_latency_adds_its_time_on_the_wire_and_a_plain_server_does_not(setup: Setup) -> None:
    with setup.server(faults=[Latency(ms=150)]) as faulty, setup.connect(faulty) as sock:
        assert [(f.name, f.direction) for f in faulty.faults()] == [
            ("latency_downstream", "downstream")]
        assert round_trip(sock) >= LATENCY
    with setup.server() as plain, setup.connect(plain) as sock:
        round_trip(sock)  # the first one may pay for a TLS session ticket
        assert median_round_trip(sock) < PLAIN_BOUND


def test_a_protocol_server_takes_the_same_faults(setup: Setup) -> None:
    with setup.server(ProtocolServer, EchoProtocol, faults=[Latency(ms=150)]) as server, \
            setup.connect(server) as sock:
        assert round_trip(sock) >= LATENCY


def test_add_upstream_then_remove_while_traffic_flows(setup: Setup) -> None:
    with setup.server() as server, setup.connect(server) as sock:
        round_trip(sock)
        assert median_round_trip(sock) < PLAIN_BOUND
        name = server.add(Latency(ms=150), direction="upstream")
        assert name == "latency_upstream"
        assert server.faults() == [FaultInfo(name, Latency(ms=150), "upstream", 1.0)]
        assert round_trip(sock, b"slow") >= LATENCY  # the same, live connection
        server.update(name, ms=300)
        assert round_trip(sock, b"slower") >= 2 * LATENCY
        server.remove(name)
        assert server.faults() == []
        assert median_round_trip(sock) < PLAIN_BOUND
        assert round_trip(sock, b"x" * 100_000) < 5  # bulk still flows, in order
        transcript = server.loop.run_sync(
            lambda: [e.note for c in server.loop.handlers() if hasattr(c, "transcript")
                     for e in c.transcript.entries() if e.note])
        assert transcript  # what the fault did is in the connection's transcript


def test_when_reset_peer_resets_only_the_connection_that_sent_commit(setup: Setup) -> None:
    with setup.server(faults=[When(ResetPeer(), match=b"COMMIT")]) as server, \
            setup.connect(server) as bystander:
        committer = setup.raw(server)
        try:
            assert round_trip(bystander, b"hello") < 5
            committer.sendall(b"BEGIN")
            assert recv_exactly(committer, 5) == b"BEGIN"
            committer.sendall(b"COMMIT")
            data, error = recv_to_end(committer)
            assert isinstance(error, ConnectionResetError), f"got {data!r}, {error!r}"
        finally:
            committer.close()
        assert round_trip(bystander, b"still served") < 5
        server.wait_for_closed(1)
        [closed] = server.recently_closed()
        assert "condition met" in closed.transcript
        assert "sent RST" in closed.transcript


def test_both_directions_and_clear(setup: Setup) -> None:
    with setup.server() as server, setup.connect(server) as sock:
        round_trip(sock)
        server.add(Latency(ms=80), direction="both")
        assert round_trip(sock) >= LATENCY  # 80 ms each way
        server.clear()
        assert server.faults() == []
        assert median_round_trip(sock) < PLAIN_BOUND


def test_bad_faults_are_refused() -> None:
    with pytest.raises(TypeError, match="stream faults such as Latency"):
        EchoServer(faults=["latency"])
    server = EchoServer()
    with pytest.raises(ValueError, match="direction"):
        server.add(Latency(ms=1), direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no fault named"):
        server.remove("nope")
