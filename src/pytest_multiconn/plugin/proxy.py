"""pytest fixtures for the fault-injecting proxy (loaded by the ``multiconn`` plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiconn.plugin.nodeid import fixture_seeds

if TYPE_CHECKING:
    from pytest_multiconn.core.address import Address
    from pytest_multiconn.plugin.types import ProxyFactory, ProxyTarget
    from pytest_multiconn.proxy.proxy import FaultProxy


@pytest.fixture
def multiconn_proxy_factory(
    request: pytest.FixtureRequest, multiconn_timeout: float
) -> Iterator[ProxyFactory]:
    """Yields a factory (type pytest_multiconn.fixtures.ProxyFactory):
    multiconn_proxy_factory(target, listen=("127.0.0.1", 0), **kwargs) starts a FaultProxy
    in front of target ((host, port), a Unix socket path or a started server) and returns
    it.  Function scope.  Teardown stops every proxy it started and re-raises errors from
    their loop threads in this test.

    kwargs go to FaultProxy (seed, hold...); its waits are bounded by --multiconn-timeout
    unless timeout= is given.  Unless seed= is given, the k-th proxy of a test is seeded from
    the run seed, the test's node id and k (a rerun with --multiconn-seed N replays it).  A
    failing test's multiconn report section shows every proxied connection's transcript, and
    the per-test leak check fails the test if a proxy started during it is still running.
    """
    from pytest_multiconn.plugin.factory import EchoServerFactory

    proxies = EchoServerFactory(multiconn_timeout)
    seeds = fixture_seeds(request.node, "proxy")

    def make(
        target: ProxyTarget, listen: Address = ("127.0.0.1", 0), **kwargs: Any
    ) -> FaultProxy:
        from pytest_multiconn.proxy.proxy import FaultProxy

        kwargs.setdefault("timeout", multiconn_timeout)
        if kwargs.get("seed") is None:
            kwargs["seed"] = next(seeds)
        return proxies.adopt(FaultProxy(target, listen, **kwargs))

    try:
        yield make
    finally:
        proxies.close()
