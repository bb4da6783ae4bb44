"""pytest fixtures for the fault-injecting proxy (loaded by the ``multiconn`` plugin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_multiconn.plugin import ServerFactory
from pytest_multiconn.proxy.proxy import FaultProxy


@pytest.fixture
def multiconn_proxy(multiconn_timeout: float) -> Iterator[Callable[..., FaultProxy]]:
    """Yields a factory: ``multiconn_proxy(target, **kwargs)`` starts a :class:`FaultProxy` in
    front of ``target`` (``(host, port)``, a Unix socket path or a started server) on an
    ephemeral loopback port and returns it.  Function scope.  Teardown stops every proxy it
    started and re-raises errors from their loop threads in this test.

    ``kwargs`` go to ``FaultProxy`` (``seed``, ``hold``...).  A failing test's ``multiconn``
    report section shows every proxied connection's transcript, and the per-test leak check
    fails the test if a proxy started during it is still running.
    """
    proxies = ServerFactory(multiconn_timeout)

    def make(target: Any, **kwargs: Any) -> FaultProxy:
        kwargs.setdefault("timeout", multiconn_timeout)
        return proxies.adopt(FaultProxy(target, **kwargs))

    try:
        yield make
    finally:
        proxies.close()
