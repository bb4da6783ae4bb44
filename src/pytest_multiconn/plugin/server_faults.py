"""Fixtures for servers that misbehave on purpose (loaded by ``pytest_multiconn.plugin``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_multiconn.core.seed import derive_seed, get_run_seed
from pytest_multiconn.faults.closed_port import ClosedPort
from pytest_multiconn.faults.server import FaultyEchoServer, ServerFault


@pytest.fixture
def multiconn_faulty_server_factory(
    request: pytest.FixtureRequest, multiconn_server_factory: Any
) -> Callable[..., FaultyEchoServer]:
    """A factory: ``multiconn_faulty_server_factory(DelayEcho(0.1), ChunkedEcho(3), **kwargs)``
    starts a :class:`FaultyEchoServer` with those faults (and any :class:`EchoServer` option)
    on an ephemeral loopback port and returns it.
    Function scope.  Unless ``seed=`` is given, the k-th server of a test is seeded from the
    run seed, the test's node id and k, so a rerun with the same ``--multiconn-seed`` replays
    the same chunk sizes and jitter.  Teardown is ``multiconn_server_factory``'s: every server
    is stopped (bounded by ``--multiconn-timeout``), loop-thread errors are re-raised in the
    test, and leaks fail it.
    """
    counter = itertools.count(1)

    def make(*faults: ServerFault, seed: int | None = None, **kwargs: Any) -> FaultyEchoServer:
        k = next(counter)
        if seed is None:
            seed = derive_seed(get_run_seed(), request.node.nodeid, "faulty-server", k)
        server = FaultyEchoServer(faults=faults, seed=seed, **kwargs)
        adopted: FaultyEchoServer = multiconn_server_factory.adopt(server)
        return adopted

    return make


@pytest.fixture
def multiconn_closed_port() -> Iterator[tuple[Any, ...]]:
    """A ``(host, port)`` on 127.0.0.1 where nothing listens: connecting to it is refused
    (``ConnectionRefusedError``) at once.
    Function scope.  The port stays bound (never listening) for the whole test, so no other
    socket can take it; teardown releases it.
    """
    with ClosedPort() as port:
        yield port.address
