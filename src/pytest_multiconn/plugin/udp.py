"""pytest fixtures for UDP: a datagram echo server and the UDP fault proxy (loaded by the
``multiconn`` plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiconn.plugin.nodeid import fixture_seeds

if TYPE_CHECKING:
    from pytest_multiconn.plugin.types import UDPProxyFactory, UDPTarget
    from pytest_multiconn.udp import UDPEchoServer, UDPFaultProxy, UDPServerBase


class _UDPServers:
    """Starts UDP servers and proxies for one test and stops them all at teardown."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.servers: list[UDPServerBase[Any]] = []

    def adopt(self, server: Any) -> Any:
        self.servers.append(server)
        server.start(self.timeout)
        return server

    def close(self) -> None:
        from pytest_multiconn.plugin.factory import stop_all

        stop_all(self.servers, self.timeout)


@pytest.fixture
def multiconn_udp_server(multiconn_timeout: float) -> Iterator[UDPEchoServer]:
    """Yields a started pytest_multiconn.udp.UDPEchoServer on ``127.0.0.1`` and an
    ephemeral port: every datagram is echoed to its sender.  Function scope.  Teardown stops
    it (bounded by ``--multiconn-timeout``), re-raises errors from its loop thread in this
    test, and the per-test leak check fails the test if a UDP server it started still runs.
    """
    from pytest_multiconn.udp import UDPEchoServer

    servers = _UDPServers(multiconn_timeout)
    try:
        yield servers.adopt(UDPEchoServer(timeout=multiconn_timeout))
    finally:
        servers.close()


@pytest.fixture
def multiconn_udp_proxy_factory(
    request: pytest.FixtureRequest, multiconn_timeout: float
) -> Iterator[UDPProxyFactory]:
    """Yields a factory: ``multiconn_udp_proxy_factory(target, **kwargs)`` starts a
    pytest_multiconn.udp.UDPFaultProxy in front of ``target`` (``(host, port)`` or a
    started server) on an ephemeral loopback port and returns it.  Function scope.  Teardown
    stops every proxy it started and re-raises errors from their loop threads in this test.

    ``kwargs`` go to ``UDPFaultProxy`` (``seed``, ``idle_timeout``, ``max_sessions``...).  A
    failing test's ``multiconn`` report section shows each proxy's faults, seed and every
    session's transcript (what each fault did to which datagram).  Unless ``seed=`` is
    given, the k-th proxy of a test is seeded from the run seed, the test's node id and k (a
    rerun with ``--multiconn-seed N`` replays it).
    """
    proxies = _UDPServers(multiconn_timeout)
    seeds = fixture_seeds(request.node, "udp-proxy")

    def make(target: UDPTarget, **kwargs: Any) -> UDPFaultProxy:
        from pytest_multiconn.udp import UDPFaultProxy

        kwargs.setdefault("timeout", multiconn_timeout)
        if kwargs.get("seed") is None:
            kwargs["seed"] = next(seeds)
        proxy: UDPFaultProxy = proxies.adopt(UDPFaultProxy(target, **kwargs))
        return proxy

    try:
        yield make
    finally:
        proxies.close()
