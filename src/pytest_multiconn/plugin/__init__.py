"""The pytest plugin (entry point ``multiconn``): thin fixtures over the public API.

Everything here also works without pytest through :class:`~pytest_multiconn.EchoServer` and
:class:`~pytest_multiconn.MultiConnClient`; the fixtures add scoping, teardown and leak checks.
Disable the plugin with ``-p no:multiconn``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from pytest_multiconn.client.multiconn import ClientResults, MultiConnClient
from pytest_multiconn.core.process import ServerProcess
from pytest_multiconn.core.server import ServerBase
from pytest_multiconn.plugin.options import get_option, register_option
from pytest_multiconn.servers.echo import EchoServer

S = TypeVar("S", bound=ServerBase)

# Sub-plugins, one per area, loaded only when this plugin is (so ``-p no:multiconn`` turns
# them all off).
pytest_plugins: list[str] = [
    "pytest_multiconn.plugin.report",
    "pytest_multiconn.plugin.client_faults",
    "pytest_multiconn.plugin.server_faults",
    "pytest_multiconn.plugin.proxy",
    "pytest_multiconn.plugin.tls",
    "pytest_multiconn.plugin.scripted",
    "pytest_multiconn.plugin.suite",
    "pytest_multiconn.plugin.toxiproxy",
    "pytest_multiconn.plugin.udp",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    register_option(
        parser,
        "timeout",
        type=float,
        default=10.0,
        help="bound in seconds on every wait, connect and stop done by multiconn fixtures",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "multiconn_exchange(exchange): the exchange a test speaks; multiconn_fault then runs "
        "only the client faults it supports",
    )
    config.addinivalue_line(
        "markers",
        "multiconn_server(**kwargs): keyword arguments for the multiconn_server fixture's "
        "server (for example idle_timeout=0.5; protocol='line'|'http'|'redis' or a handler "
        "factory serves that protocol instead of echo)",
    )


@pytest.fixture(scope="session")
def multiconn_timeout(pytestconfig: pytest.Config) -> float:
    """Yields the bound in seconds (a float) on every wait our fixtures make, from
    ``--multiconn-timeout`` or the ini key ``multiconn_timeout``.  Session scope; no teardown.
    """
    return float(get_option(pytestconfig, "timeout"))


class ServerFactory:
    """Starts servers for one test and stops them all at teardown."""

    def __init__(self, timeout: float, name_hint: str = "") -> None:
        self.timeout = timeout
        self.name_hint = name_hint
        self.servers: list[ServerBase] = []

    def __call__(self, **kwargs: Any) -> EchoServer:
        return self.adopt(EchoServer(**kwargs))

    def adopt(self, server: S) -> S:
        """Start ``server`` if needed and stop it at teardown; returns it."""
        self.servers.append(server)
        if not server._started:
            server.start(self.timeout)
        return server

    def close(self) -> None:
        """Stop every server (newest first), then re-raise the first loop error."""
        errors: list[BaseException] = []
        for server in reversed(self.servers):
            try:
                server.stop(self.timeout)
            except BaseException as exc:  # noqa: BLE001 - every server is stopped before raising
                errors.append(exc)
        for server in self.servers:
            try:
                server.check()
            except BaseException as exc:  # noqa: BLE001 - raised below, first one wins
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def multiconn_server_factory(
    request: pytest.FixtureRequest, multiconn_timeout: float
) -> Iterator[Callable[..., EchoServer]]:
    """Yields a factory: ``multiconn_server_factory(**kwargs)`` starts an :class:`EchoServer`
    on an ephemeral loopback port and returns it; ``.adopt(server)`` starts and owns any
    server.  Function scope.  Teardown stops them all, re-raises loop-thread errors in this
    test, and fails it if anything leaked.

    Options: ``idle_timeout``, ``max_connections``, ``high_water``/``low_water``,
    ``host="::1"``, ``unix_path``, ``backlog``.  Each stop is bounded by
    ``--multiconn-timeout``; the per-test leak check names where a leaked server was started.
    """
    factory = ServerFactory(multiconn_timeout, request.node.nodeid)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def multiconn_server(
    request: pytest.FixtureRequest, multiconn_server_factory: ServerFactory
) -> ServerBase:
    """Yields a started :class:`EchoServer` on ``127.0.0.1`` and an ephemeral port.
    Function scope (start and stop take about a millisecond).  Teardown stops it, re-raises
    errors from its loop thread in this test, and fails it on leaks.

    Options come from ``@pytest.mark.multiconn_server(**kwargs)``, for example
    ``@pytest.mark.multiconn_server(idle_timeout=0.5)``; ``protocol="line"`` (or ``"http"``,
    ``"redis"``, or a handler factory such as your own ``asyncio.Protocol`` subclass) serves
    that protocol with a :class:`~pytest_multiconn.servers.ProtocolServer` instead of echo.
    """
    marker = request.node.get_closest_marker("multiconn_server")
    kwargs = dict(marker.kwargs) if marker else {}
    protocol = kwargs.pop("protocol", "echo")
    if protocol == "echo":
        return multiconn_server_factory(**kwargs)
    from pytest_multiconn.servers.fakes import handler_factory
    from pytest_multiconn.servers.protocol import ProtocolServer

    factory = handler_factory(protocol) if isinstance(protocol, str) else protocol
    return multiconn_server_factory.adopt(ProtocolServer(factory, **kwargs))


@pytest.fixture
def multiconn_client(multiconn_timeout: float) -> Callable[..., ClientResults]:
    """Yields a function ``multiconn_client(address, num_connections=2, messages=...,
    **kwargs) -> ClientResults`` running a :class:`MultiConnClient` (one result per
    connection; ``.check()`` raises on any failure).  Function scope; no teardown needed:
    each run closes its sockets before it returns.

    Each run is bounded by ``--multiconn-timeout`` unless ``timeout=`` is given.
    """

    def run(address: Any, num_connections: int = 2, **kwargs: Any) -> ClientResults:
        kwargs.setdefault("timeout", multiconn_timeout)
        return MultiConnClient(address, num_connections, **kwargs).run()

    return run


@pytest.fixture(scope="session")
def multiconn_session_server(multiconn_timeout: float) -> Iterator[EchoServer]:
    """Yields one started :class:`EchoServer` on ``127.0.0.1`` and an ephemeral port, shared
    by every test of a session (under pytest-xdist: of one worker, so workers share nothing).
    Session scope; teardown stops it at the end of the session.

    Tests share its counters and connections, so assert on differences
    (``before = server.stats()``) rather than on totals.  Teardown also re-raises errors from
    its loop thread.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    server = EchoServer(name=f"multiconn-echo[{worker}:session]")
    server.start(multiconn_timeout)
    try:
        yield server
    finally:
        server.stop(multiconn_timeout)
    server.check()


@pytest.fixture
def multiconn_server_process(multiconn_timeout: float) -> Iterator[ServerProcess]:
    """Yields a started :class:`ServerProcess`: ``python -m pytest_multiconn server 127.0.0.1
    0`` in a child process, with ``address``, ``host``, ``port`` and ``pid``.  Function
    scope; teardown interrupts it and fails the test if it had to be killed.

    For tests that need a process boundary (a server that can crash or be killed).
    Teardown sends SIGINT, waits up to ``--multiconn-timeout``, kills the child only if it
    did not exit, and then fails the test (it had to be killed, or exited with an error
    status), showing the child's last output.
    """
    with ServerProcess(timeout=multiconn_timeout) as process:
        yield process
