"""The ``multiconn_toxiproxy`` fixture: toxiproxy's HTTP API in-process (loaded by the plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pytest_multiconn.plugin.nodeid import fixture_seeds

if TYPE_CHECKING:
    from pytest_multiconn.toxiproxy.http import ToxiproxyServer


@pytest.fixture
def multiconn_toxiproxy(
    request: pytest.FixtureRequest, multiconn_timeout: float
) -> Iterator[ToxiproxyServer]:
    """Yields a started pytest_multiconn.toxiproxy.ToxiproxyServer: toxiproxy's HTTP
    API on ``127.0.0.1`` and an ephemeral port (``.url`` for a toxiproxy client, ``.api`` to
    call it directly), with no proxies yet.  Function scope.  Teardown stops the API and every
    proxy made through it, re-raises errors from their loop threads in this test, and the
    per-test leak check fails the test if any of them still runs.

    Every random draw is seeded from the run seed and the test's node id, as every fixture's
    (``--multiconn-seed N`` replays it).  Needs h11: ``pip install
    'pytest-multiconn[toxiproxy]'``.
    """
    from pytest_multiconn.plugin.factory import EchoServerFactory
    from pytest_multiconn.toxiproxy.http import ToxiproxyServer

    servers = EchoServerFactory(multiconn_timeout)
    try:
        seed = next(fixture_seeds(request.node, "toxiproxy"))
        yield servers.adopt(ToxiproxyServer(seed=seed, timeout=multiconn_timeout))
    finally:
        servers.close()
