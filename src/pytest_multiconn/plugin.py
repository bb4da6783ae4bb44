"""The pytest plugin (entry point ``multiconn``): thin fixtures over the public API.

Everything here also works without pytest through :class:`~pytest_multiconn.EchoServer` and
:class:`~pytest_multiconn.MultiConnClient`; the fixtures add scoping, teardown and leak checks.
Disable the plugin with ``-p no:multiconn``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._client import ClientResults, MultiConnClient
from ._errors import LeakError
from ._options import get_option, register_option
from ._registry import live_servers
from ._server import EchoServer, ServerBase

# Sub-plugins, one per area, loaded only when this plugin is (so ``-p no:multiconn`` turns
# them all off).
pytest_plugins: list[str] = []


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
        "multiconn_server(**kwargs): keyword arguments for the multiconn_server fixture's "
        "EchoServer (for example idle_timeout=0.5)",
    )


@pytest.fixture(scope="session")
def multiconn_timeout(pytestconfig: pytest.Config) -> float:
    """The bound, in seconds, on every wait our fixtures make (``--multiconn-timeout``).

    Session scope; yields a float; no teardown.
    """
    return float(get_option(pytestconfig, "timeout"))


class ServerFactory:
    """Starts servers for one test and stops them all at teardown."""

    def __init__(self, timeout: float, name_hint: str = "") -> None:
        self.timeout = timeout
        self.name_hint = name_hint
        self.servers: list[ServerBase] = []

    def __call__(self, **kwargs: Any) -> EchoServer:
        server = EchoServer(**kwargs)
        return self.adopt(server)

    def adopt(self, server: ServerBase) -> Any:
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


def _check_leaks(before: set[int], what: str) -> None:
    leaked = [s for s in live_servers() if id(s) not in before]
    if not leaked:
        return
    names = ", ".join(repr(s) for s in leaked)
    for server in leaked:
        server.stop()
    raise LeakError(
        f"{what} left {len(leaked)} server(s) running: {names}. Stop them (use `with`, or "
        "the multiconn_server_factory fixture, which stops them for you); they were stopped now"
    )


@pytest.fixture
def multiconn_server_factory(
    request: pytest.FixtureRequest, multiconn_timeout: float
) -> Iterator[Callable[..., EchoServer]]:
    """A factory: ``multiconn_server_factory(**kwargs)`` starts an :class:`EchoServer` with
    those options (``idle_timeout``, ``max_connections``, ``high_water``, ``host="::1"``,
    ``unix_path``...) on an ephemeral loopback port and returns it.

    Function scope.  Teardown stops every server it started (each stop is bounded by
    ``--multiconn-timeout``), re-raises the first exception from a loop thread, and fails the
    test if a server started during it is still running.
    """
    before = {id(s) for s in live_servers()}
    factory = ServerFactory(multiconn_timeout, request.node.nodeid)
    try:
        yield factory
    finally:
        factory.close()
    _check_leaks(before, request.node.nodeid)


@pytest.fixture
def multiconn_server(
    request: pytest.FixtureRequest, multiconn_server_factory: ServerFactory
) -> EchoServer:
    """A started :class:`EchoServer` on ``127.0.0.1`` and an ephemeral port.

    Function scope (it starts and stops in about a millisecond, so every test gets its own).
    Options come from ``@pytest.mark.multiconn_server(**kwargs)``.  Teardown stops it,
    re-raises errors from its loop thread in this test, and fails the test on leaks.
    """
    marker = request.node.get_closest_marker("multiconn_server")
    kwargs = dict(marker.kwargs) if marker else {}
    return multiconn_server_factory(**kwargs)


@pytest.fixture
def multiconn_client(multiconn_timeout: float) -> Callable[..., ClientResults]:
    """A function ``multiconn_client(address, num_connections=2, messages=..., **kwargs)``
    that runs a :class:`MultiConnClient` against ``address`` and returns its
    :class:`ClientResults` (one result per connection; ``.check()`` raises on any failure).

    Function scope.  Each run is bounded by ``--multiconn-timeout`` unless ``timeout=`` is
    given, and closes all its sockets before it returns, so teardown has nothing to do.
    """

    def run(address: Any, num_connections: int = 2, **kwargs: Any) -> ClientResults:
        kwargs.setdefault("timeout", multiconn_timeout)
        return MultiConnClient(address, num_connections, **kwargs).run()

    return run
