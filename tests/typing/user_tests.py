"""A user's test file, annotated with the fixture types of ``pytest_multiconn.fixtures``.

``tests/test_typing.py`` runs ``mypy --strict`` on it (it must pass without casts or loose
types) and runs it with pytest (the annotations must say what the fixtures really give).
Its name does not match ``test_*.py``: the suite does not collect it on its own.
"""

from __future__ import annotations

import socket

import pytest

from pytest_multiconn import ClientResults, EchoServer, FaultProxy, MultiConnClient
from pytest_multiconn.faults import ClientFault, HalfClose
from pytest_multiconn.fixtures import (
    Address,
    ClientRunner,
    FaultyClient,
    FaultyClientFactory,
    FaultyServerFactory,
    ProxyFactory,
    ScriptedServerFactory,
    ServerAddress,
    ServerFactory,
    TCPAddress,
    ToxiproxyServer,
    UDPEchoServer,
    UDPProxyFactory,
)
from pytest_multiconn.proxy import Latency
from pytest_multiconn.servers import Expect, Reply, ScriptedServer


def test_server_address_is_typed(multiconn_server: EchoServer) -> None:
    address: ServerAddress = multiconn_server.address
    wider: Address = address  # every server address is an address a client takes
    assert wider == address
    host: str = multiconn_server.host
    port: int = multiconn_server.port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.connect(multiconn_server.address)  # typeshed takes it as is


def test_client_through_proxy(
    multiconn_server_factory: ServerFactory,
    multiconn_proxy_factory: ProxyFactory,
    multiconn_client: ClientRunner,
) -> None:
    server: EchoServer = multiconn_server_factory(idle_timeout=5.0)
    proxy: FaultProxy = multiconn_proxy_factory(server)
    proxy.add(Latency(ms=1))
    results: ClientResults = multiconn_client(proxy.address, 2, [b"ping"])
    assert results.check().ok
    assert all(r.ok for r in results)


def test_faulty_client_results_are_set(
    multiconn_server: EchoServer, multiconn_faulty_client_factory: FaultyClientFactory
) -> None:
    fault: ClientFault = HalfClose()
    client: FaultyClient = multiconn_faulty_client_factory(
        multiconn_server.address, 1, faults=[fault]
    )
    assert isinstance(client, MultiConnClient)
    results: ClientResults = client.results  # not Optional: the client ran
    assert len(results) == 1


def test_faulty_server(multiconn_faulty_server_factory: FaultyServerFactory) -> None:
    server = multiconn_faulty_server_factory(seed=1)
    results = MultiConnClient(server.address, 1, [b"hi"], timeout=5).run()
    assert results.ok


def test_scripted_server(
    multiconn_scripted_server_factory: ScriptedServerFactory, multiconn_client: ClientRunner
) -> None:
    server: ScriptedServer = multiconn_scripted_server_factory(
        [Expect(b"HELLO\n"), Reply(b"WORLD\n")]
    )
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"HELLO\n")
        assert sock.recv(6) == b"WORLD\n"


def test_toxiproxy(multiconn_toxiproxy: ToxiproxyServer) -> None:
    url: str = multiconn_toxiproxy.url
    assert url.startswith("http://127.0.0.1:")


def test_udp_proxy(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: UDPProxyFactory
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=1)
    host, port = proxy.address  # UDP addresses are (host, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"ping", (host, port))
        assert sock.recv(16) == b"ping"


def test_closed_port(multiconn_closed_port: TCPAddress) -> None:
    with socket.socket() as sock:
        sock.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            sock.connect(multiconn_closed_port)
