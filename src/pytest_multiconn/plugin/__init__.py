"""The pytest plugin (entry point ``multiconn``): thin fixtures over the public API.

The fixtures' types are in :mod:`pytest_multiconn.fixtures` (for annotating tests).

Everything here also works without pytest through :class:`~pytest_multiconn.EchoServer` and
:class:`~pytest_multiconn.MultiConnClient`; the fixtures add scoping, teardown and leak checks.
Disable the plugin with ``-p no:multiconn``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

from pytest_multiconn.core.defaults import DEFAULT_MESSAGES
from pytest_multiconn.plugin.nodeid import base_nodeid
from pytest_multiconn.plugin.options import (
    get_option,
    positive_timeout,
    register_option,
    validate_options,
)

if TYPE_CHECKING:
    # Imported where first used, not here: pytest imports this module at every start, and
    # these pull in the loop, servers, faults, TLS (trustme, cryptography) and the client
    # (issue 25; tests/test_plugin_imports.py keeps it so).
    from pytest_multiconn.client.multiconn import ClientResults
    from pytest_multiconn.core.address import Address
    from pytest_multiconn.core.process import ServerProcess
    from pytest_multiconn.core.server import ServerBase
    from pytest_multiconn.core.shared import SharedLoop
    from pytest_multiconn.plugin.types import ClientRunner, ServerFactory
    from pytest_multiconn.servers.echo import EchoServer

T = TypeVar("T")

#: The marker that configures ``multiconn_server`` (and the TLS server fixtures).
SERVER_MARKER = "multiconn_server"

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
        type=positive_timeout,
        ini_type="float",
        default=10.0,
        help="bound in seconds on every wait, connect and stop done by multiconn fixtures "
        "and by the servers, clients and proxies they make (their wait_for*() default)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Every option and ini key is checked here, once: a bad value is a usage error at
    # start-up, not a failure of each test that reads it.
    validate_options(config)
    config.addinivalue_line(
        "markers",
        "multiconn_exchange(exchange): the exchange a test speaks; multiconn_fault then runs "
        "only the client faults it supports",
    )
    config.addinivalue_line(
        "markers",
        f"{SERVER_MARKER}(**kwargs): keyword arguments for the server of the "
        "multiconn_server, multiconn_tls_server and multiconn_any_server fixtures "
        "(for example idle_timeout=0.5; protocol='line'|'http'|'redis' or a handler "
        "factory serves that protocol instead of echo)",
    )


@pytest.fixture(scope="session")
def multiconn_timeout(pytestconfig: pytest.Config) -> float:
    """The bound in seconds (a float) on every wait our fixtures make, and the default bound
    of the wait_for*() methods of the servers, clients and proxies they make; from
    --multiconn-timeout or the ini key multiconn_timeout (default 10).  Session scope; no
    teardown.
    """
    return float(get_option(pytestconfig, "timeout"))


def _keywords_of(cls: type) -> set[str]:
    """The keyword parameters ``cls(...)`` accepts, following ``**kwargs`` up the MRO."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(
            p.name
            for p in params
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def server_marker_kwargs(
    request: pytest.FixtureRequest, cls: type | None = None, extra: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The keyword arguments of the closest ``@pytest.mark.multiconn_server(...)``, checked
    against ``cls``'s constructor (``EchoServer``'s by default; and ``extra``) so that a typo
    names the marker and the known keys."""
    marker = request.node.get_closest_marker(SERVER_MARKER)
    if marker is None:
        return {}
    if cls is None:
        from pytest_multiconn.servers.echo import EchoServer

        cls = EchoServer
    known = _keywords_of(cls) | extra
    unknown = sorted(set(marker.kwargs) - known)
    if marker.args or unknown:
        what = (
            f"unknown keyword(s) {', '.join(map(repr, unknown))}"
            if unknown
            else f"positional arguments {marker.args!r} (only keywords are taken)"
        )
        pytest.fail(
            f"@pytest.mark.{SERVER_MARKER}(...) on {base_nodeid(request.node)}: {what}; "
            f"the known keywords are {', '.join(sorted(known))}",
            pytrace=False,
        )
    return dict(marker.kwargs)


class EchoServerFactory:
    """Starts servers for one test and stops them all at teardown (implements
    :class:`~pytest_multiconn.fixtures.ServerFactory`)."""

    def __init__(
        self, timeout: float, name_hint: str = "", shared_loop: SharedLoop | None = None
    ) -> None:
        self.timeout = timeout
        self.name_hint = name_hint
        #: The worker's loop thread that the echo servers made here run on (None: one each).
        self.shared_loop = shared_loop
        self.servers: list[Stoppable] = []

    def __repr__(self) -> str:
        return f"<EchoServerFactory timeout={self.timeout} servers={len(self.servers)}>"

    def __call__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> EchoServer:
        from pytest_multiconn.servers.echo import EchoServer

        if self.shared_loop is not None:
            kwargs.setdefault("loop", self.shared_loop)
        kwargs.setdefault("timeout", self.timeout)
        return self.adopt(EchoServer(host, port, **kwargs))

    def adopt(self, server: T) -> T:
        """Start ``server`` and stop it at teardown (newest first); returns it.

        What it takes (anything else is a TypeError naming this):

        * one of ours (a server, proxy, UDP server, ``ServerProcess``): started with the
          fixture's timeout unless it runs already, stopped with it, and its loop-thread
          errors re-raised at teardown;
        * any object with ``start()`` and ``stop()`` methods: ``start()`` is called now and
          ``stop()`` at teardown, both without arguments;
        * a context manager: entered now (as ``with`` would), exited at teardown with no
          exception.

        A ``start()`` or ``__enter__`` that raises leaves nothing to stop.
        """
        import inspect

        from pytest_multiconn.core.lifecycle import LoopService, StartStop

        if isinstance(server, StartStop):
            # Each of ours takes stop(timeout); a loop service's start takes one too.
            ours: Any = server
            self.servers.append(ours)
            if server.needs_start():
                if isinstance(server, LoopService):
                    ours.start(self.timeout)
                else:
                    ours.start()
            return server
        start, stop = getattr(server, "start", None), getattr(server, "stop", None)
        if callable(start) and callable(stop):
            started = start()
            if inspect.isawaitable(started):
                if inspect.iscoroutine(started):
                    started.close()
                raise TypeError(
                    f"adopt() calls start() without awaiting it, and {type(server).__name__}"
                    ".start() is a coroutine function: start and stop an async server in your "
                    "async test (or fixture) instead"
                )
            self.servers.append(_Adopted(server, stop, f"{type(server).__name__}.stop()"))
            return server
        enter, leave = getattr(server, "__enter__", None), getattr(server, "__exit__", None)
        if callable(enter) and callable(leave):
            enter()
            self.servers.append(
                _Adopted(server, lambda: leave(None, None, None), f"{type(server).__name__}"
                         ".__exit__()")
            )
            return server
        raise TypeError(
            "multiconn_server_factory.adopt() takes one of our servers, an object with "
            "start() and stop() methods (called without arguments), or a context manager "
            f"(with __enter__ and __exit__); got {server!r} of type {type(server).__name__}"
        )

    def close(self) -> None:
        """Stop every server (newest first), then re-raise the first loop error."""
        stop_all(self.servers, self.timeout)


class Stoppable(Protocol):
    """What a fixture's teardown asks of a server it started (stream or UDP, or a proxy)."""

    def stop(self, timeout: float) -> object: ...

    def check(self) -> None: ...


class _Adopted:
    """A server that is not ours, as teardown sees it: ``stop`` is its own ``stop()`` (or
    ``__exit__``), called without arguments; there are no loop errors to check."""

    def __init__(self, server: object, stop: Callable[[], object], what: str) -> None:
        self.server = server
        self._stop = stop
        self.what = what

    def __repr__(self) -> str:
        return f"<adopted {self.server!r}: {self.what} at teardown>"

    def stop(self, timeout: float) -> object:
        return self._stop()

    def check(self) -> None:
        pass


def stop_all(servers: Sequence[Stoppable], timeout: float) -> None:
    """Stop every server (newest first), then re-raise the first error: a stop's, else the
    first loop-thread error ``check()`` finds (every server is stopped and checked first)."""
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.stop(timeout)
        except BaseException as exc:  # noqa: BLE001 - every server is stopped before raising
            errors.append(exc)
    for server in servers:
        try:
            server.check()
        except BaseException as exc:  # noqa: BLE001 - raised below, first one wins
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def _multiconn_shared_loop(multiconn_timeout: float) -> Iterator[SharedLoop]:
    """The loop thread of this process that function-scoped echo servers share (internal).

    Started by the first server that needs it and kept for the session, so a test does not
    pay for a new thread (see ``core/shared.py``); replaced when a server finds it wedged or
    dead.  Each server keeps its own listener, connections, errors and leak check.
    """
    from pytest_multiconn.core.shared import SharedLoop

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    shared = SharedLoop(f"multiconn-shared[{worker}]")
    try:
        yield shared
    finally:
        shared.close(multiconn_timeout)


@pytest.fixture
def multiconn_server_factory(
    request: pytest.FixtureRequest, multiconn_timeout: float, _multiconn_shared_loop: SharedLoop
) -> Iterator[ServerFactory]:
    """Yields a factory (type pytest_multiconn.fixtures.ServerFactory):
    multiconn_server_factory(host="127.0.0.1", port=0, **kwargs) starts an EchoServer and
    returns it; .adopt(server) starts and owns any server: one of ours, any object with
    start() and stop() (called without arguments), or a context manager (entered now,
    exited at teardown); anything else is a TypeError.  Function scope.  Echo servers it
    makes run on the worker's shared loop thread (pass loop=None for a thread of its own).
    Teardown stops them all, re-raises loop-thread errors in this test, and fails it if
    anything leaked.

    Options: idle_timeout, max_connections, high_water/low_water, unix_path, backlog, tls
    (host="::1" for IPv6).  Its servers' wait_for*() and every stop are bounded by
    --multiconn-timeout; the per-test leak check names where a leaked server was started.
    """
    factory = EchoServerFactory(
        multiconn_timeout, base_nodeid(request.node), _multiconn_shared_loop
    )
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def multiconn_server(
    request: pytest.FixtureRequest,
    multiconn_server_factory: ServerFactory,
    multiconn_timeout: float,
) -> ServerBase:
    """Yields a started EchoServer on 127.0.0.1 and an ephemeral port, configured by the
    marker @pytest.mark.multiconn_server(**kwargs), for example
    @pytest.mark.multiconn_server(idle_timeout=0.5); an unknown keyword fails the test
    naming the known ones.  protocol="line" (or "http", "redis", or a handler factory such
    as your own asyncio.Protocol subclass) serves that protocol with a ProtocolServer
    instead of echo.  Function scope; an echo server runs on the worker's shared loop thread
    (a fresh listener, connection set and error list per test, no new thread).

    server.wait_for_*() waits up to --multiconn-timeout unless given timeout=.  Teardown
    stops it, re-raises errors its handlers raised in this test, and fails it on leaks.
    """
    marker = request.node.get_closest_marker(SERVER_MARKER)
    protocol = marker.kwargs.get("protocol", "echo") if marker else "echo"
    if protocol == "echo":
        kwargs = server_marker_kwargs(request, extra=frozenset({"protocol"}))
        kwargs.pop("protocol", None)
        return multiconn_server_factory(**kwargs)
    from pytest_multiconn.servers.fakes import handler_factory
    from pytest_multiconn.servers.protocol import ProtocolServer

    kwargs = server_marker_kwargs(request, ProtocolServer, frozenset({"protocol"}))
    kwargs.pop("protocol", None)
    factory = handler_factory(protocol) if isinstance(protocol, str) else protocol
    kwargs.setdefault("timeout", multiconn_timeout)
    return multiconn_server_factory.adopt(ProtocolServer(factory, **kwargs))


@pytest.fixture
def multiconn_client(multiconn_timeout: float) -> ClientRunner:
    """Yields a function (type pytest_multiconn.fixtures.ClientRunner):
    multiconn_client(address, num_connections=2, messages=DEFAULT_MESSAGES, **kwargs)
    runs a MultiConnClient with those arguments and returns its ClientResults (one result
    per connection; .check() raises on any failure).  Function scope; no teardown needed:
    each run closes its sockets before it returns.

    Each run is bounded by --multiconn-timeout unless timeout= is given.
    """

    def run(
        address: Address,
        num_connections: int = 2,
        messages: Iterable[bytes] = DEFAULT_MESSAGES,
        **kwargs: Any,
    ) -> ClientResults:
        from pytest_multiconn.client.multiconn import MultiConnClient

        kwargs.setdefault("timeout", multiconn_timeout)
        return MultiConnClient(address, num_connections, messages, **kwargs).run()

    return run


@pytest.fixture(scope="session")
def multiconn_session_server(multiconn_timeout: float) -> Iterator[EchoServer]:
    """Yields one started EchoServer on 127.0.0.1 and an ephemeral port, shared by every
    test of a session (under pytest-xdist: of one worker, so workers share nothing).
    Session scope; teardown stops it at the end of the session.

    Tests share its counters and connections, so assert on differences
    (before = server.stats()) rather than on totals.  Its wait_for*() waits up to
    --multiconn-timeout.  Teardown also re-raises errors from its loop thread.
    """
    from pytest_multiconn.servers.echo import EchoServer

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    server = EchoServer(name=f"multiconn-echo[{worker}:session]", timeout=multiconn_timeout)
    server.start(multiconn_timeout)
    try:
        yield server
    finally:
        server.stop(multiconn_timeout)
    server.check()


@pytest.fixture
def multiconn_server_process(multiconn_timeout: float) -> Iterator[ServerProcess]:
    """Yields a started ServerProcess: python -m pytest_multiconn server 127.0.0.1 0 in a
    child process, with address, host, port and pid.  Function scope; teardown interrupts it
    and fails the test if it had to be killed.

    For tests that need a process boundary (a server that can crash or be killed).
    Teardown sends SIGINT, waits up to --multiconn-timeout, kills the child only if it did
    not exit, and then fails the test (it had to be killed, or exited with an error status),
    showing the child's last output.
    """
    from pytest_multiconn.core.process import ServerProcess

    with ServerProcess(timeout=multiconn_timeout) as process:
        yield process
