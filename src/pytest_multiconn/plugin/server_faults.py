"""Fixtures for servers that misbehave on purpose (loaded by ``pytest_multiconn.plugin``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiconn.plugin.nodeid import fixture_seeds

if TYPE_CHECKING:
    from pytest_multiconn.core.address import TCPAddress
    from pytest_multiconn.faults.toxics import Toxic
    from pytest_multiconn.plugin.types import FaultyServerFactory, ServerFactory
    from pytest_multiconn.servers.protocol import HandlerFactory, ProtocolServer


@pytest.fixture
def multiconn_faulty_server_factory(
    request: pytest.FixtureRequest,
    multiconn_server_factory: ServerFactory,
    multiconn_timeout: float,
) -> FaultyServerFactory:
    """A factory (type pytest_multiconn.fixtures.FaultyServerFactory):
    multiconn_faulty_server_factory(Latency(ms=100), Slicer(average_size=3), seed=None,
    protocol=None, **kwargs) starts an EchoServer with those stream faults on what it sends
    (protocol=MyHandler: a ProtocolServer for that handler) and any server option, on an
    ephemeral loopback port, and returns it; server.add(fault, direction=...) adds more.
    Function scope.  Unless seed= is given, the k-th server of a test is seeded from the run
    seed, the test's node id and k, so a rerun with the same --multiconn-seed replays the
    same slice sizes and jitter.  Its wait_for*() waits up to --multiconn-timeout.  Teardown
    is multiconn_server_factory's: every server is stopped (bounded by --multiconn-timeout),
    loop-thread errors are re-raised in the test, and leaks fail it.
    """
    seeds = fixture_seeds(request.node, "faulty-server")

    def make(*faults: Toxic, seed: int | None = None, protocol: HandlerFactory | None = None,
             **kwargs: Any) -> ProtocolServer:
        from pytest_multiconn.servers.echo import EchoServer
        from pytest_multiconn.servers.protocol import ProtocolServer

        if seed is None:
            seed = next(seeds)
        kwargs.setdefault("timeout", multiconn_timeout)
        server: ProtocolServer
        if protocol is None:
            server = EchoServer(faults=faults, seed=seed, **kwargs)
        else:
            server = ProtocolServer(protocol, faults=faults, seed=seed, **kwargs)
        return multiconn_server_factory.adopt(server)

    return make


@pytest.fixture
def multiconn_closed_port() -> Iterator[TCPAddress]:
    """A (host, port) on 127.0.0.1 where nothing listens: connecting to it is refused
    (ConnectionRefusedError) at once.
    Function scope.  The port stays bound (never listening) for the whole test, so no other
    socket can take it; teardown releases it.
    """
    from pytest_multiconn.faults.closed_port import ClosedPort

    with ClosedPort() as port:
        yield port.address
