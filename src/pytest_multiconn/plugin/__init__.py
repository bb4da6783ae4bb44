"""The pytest plugin (entry point ``multiconn``): thin fixtures over the public API.

The fixtures' types are in :mod:`pytest_multiconn.fixtures` (for annotating tests).

Everything here also works without pytest through :class:`~pytest_multiconn.EchoServer` and
:class:`~pytest_multiconn.MultiConnClient`; the fixtures add scoping, teardown and leak checks.
Disable the plugin with ``-p no:multiconn``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiconn.core.defaults import DEFAULT_MESSAGES
from pytest_multiconn.core.seed import set_current_test_id
from pytest_multiconn.plugin.nodeid import base_nodeid, enter_test, leave_test, running_item
from pytest_multiconn.plugin.options import (
    SERVER_MARKER,
    get_option,
    positive_timeout,
    register_option,
    validate_options,
)
from pytest_multiconn.plugin.report import begin_record, end_record

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


# Sub-plugins, one per area, registered when this plugin is (so ``-p no:multiconn`` turns
# them all off).  Not a ``pytest_plugins`` list: pytest looks each name in it up among the
# entry points of every installed distribution before importing it (one scan of all their
# metadata per name), which was most of what this plugin added to a pytest start with
# bytecode cached (issue 25).
SUB_PLUGINS: tuple[str, ...] = (
    "pytest_multiconn.plugin.report",
    "pytest_multiconn.plugin.client_faults",
    "pytest_multiconn.plugin.server_faults",
    "pytest_multiconn.plugin.proxy",
    "pytest_multiconn.plugin.tls",
    "pytest_multiconn.plugin.scripted",
    "pytest_multiconn.plugin.suite",
    "pytest_multiconn.plugin.toxiproxy",
    "pytest_multiconn.plugin.udp",
)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # The first hook pytest calls on a plugin it registers: the sub-plugins are registered
    # (and given pytest_addoption) before the command line is parsed, as pytest_plugins are.
    # Imported here rather than by ``pluginmanager.import_plugin``, which marks each one for
    # assertion rewriting first (see _no_assertion_rewriting); blocking one with ``-p no:``
    # works as it does there.
    _no_assertion_rewriting(pluginmanager)
    for name in SUB_PLUGINS:
        if pluginmanager.is_blocked(name) or pluginmanager.get_plugin(name) is not None:
            continue
        pluginmanager.register(importlib.import_module(name), name)


def _no_assertion_rewriting(pluginmanager: pytest.PytestPluginManager) -> None:
    """Take the package off pytest's list of modules to rewrite assertions in.

    pytest marks every top-level package of a plugin's distribution.  Each module of ours
    imported from then on goes through its assertion rewriter: parsed, rewritten and compiled
    into a cache of its own.  Under ``PYTHONDONTWRITEBYTECODE=1`` (this machine's default, and
    common in containers) that cache is never written, so it happens at every import, instead
    of loading the bytecode pip compiled at install.  The first server of a run cost about
    80 ms instead of 16 (issue 25).  The package has no assertion a user reads; a test module
    of ours (``suite/test_contracts.py``) is still rewritten, by its file name.
    """
    hook: Any = pluginmanager.rewrite_hook
    # pytest's private set (tests/test_seams.py says why): no public API unmarks a name,
    # ``mark_rewrite`` only adds one.  pytest without it (or a dummy hook): nothing to do.
    marked = hook._must_rewrite if hasattr(hook, "_must_rewrite") else None
    if isinstance(marked, set):
        # The distribution's package, or this module when loaded by name (``-p`` or
        # PYTEST_PLUGINS: pytest marks the module it imports).
        root = __name__.partition(".")[0]
        marked.difference_update([n for n in marked if n == root or n.startswith(f"{root}.")])


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    # Seeds derived while this test runs use its node id without xdist's @group suffix;
    # the previous name comes back afterwards (an in-process pytester run nests).  The item
    # itself is what multiconn_server reads instead of taking ``request`` (running_item).
    # The test's record of what it started (plugin.report) is begun and ended here too: one
    # hook wrapper per test, not one per concern (issue 25).
    nodeid = base_nodeid(item)
    previous = set_current_test_id(nodeid)
    enter_test(item)
    begin_record(item, nodeid)
    try:
        return (yield)
    finally:
        end_record(item)
        leave_test(item)
        set_current_test_id(previous)


def pytest_sessionfinish(session: pytest.Session) -> None:
    shared = session.config.stash.get(_SHARED_LOOP, None)
    if shared is not None:
        del session.config.stash[_SHARED_LOOP]
        shared.close(_timeout(session.config))


_SHARED_LOOP = pytest.StashKey["SharedLoop"]()


def _timeout(config: pytest.Config) -> float:
    return float(get_option(config, "timeout"))


def _shared_loop(config: pytest.Config) -> SharedLoop:
    """The loop thread of this process that function-scoped echo servers share.

    Made by the first server that needs it and kept until the session ends, so a test does
    not pay for a new thread (see ``core/shared.py``); replaced when a server finds it
    wedged or dead.  Each server keeps its own listener, connections, errors and leak check.
    Kept on the config, not in a session fixture: a fixture more per test is about 20 us of
    pytest's machinery (issue 25).
    """
    shared = config.stash.get(_SHARED_LOOP, None)
    if shared is None:
        from pytest_multiconn.core.shared import SharedLoop

        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        shared = config.stash[_SHARED_LOOP] = SharedLoop(f"multiconn-shared[{worker}]")
    return shared


@pytest.fixture(scope="session")
def multiconn_timeout(pytestconfig: pytest.Config) -> float:
    """The bound in seconds (a float) on every wait our fixtures make, and the default bound
    of the wait_for*() methods of the servers, clients and proxies they make; from
    --multiconn-timeout or the ini key multiconn_timeout (default 10).  Session scope; no
    teardown.  Set the option or the ini key to change it: the server fixtures read the
    option itself, so overriding this fixture does not reach them.
    """
    return _timeout(pytestconfig)


@pytest.fixture
def multiconn_server_factory() -> Iterator[ServerFactory]:
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
    from pytest_multiconn.plugin.factory import EchoServerFactory

    # No fixture arguments, not even ``request``: see running_item.
    item = running_item()
    factory = EchoServerFactory(
        _timeout(item.config), base_nodeid(item), _shared_loop(item.config)
    )
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def multiconn_server() -> Iterator[ServerBase]:
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
    from pytest_multiconn.plugin.factory import EchoServerFactory, server_marker_kwargs

    # A factory of its own, not the multiconn_server_factory fixture: one function-scoped
    # fixture less for pytest to set up and tear down per test (issue 25).
    # No fixture arguments, not even ``request`` (see running_item): each one costs pytest
    # 20-50 us per test, a third of what this fixture costs without them (issue 25).
    item = running_item()
    timeout = _timeout(item.config)
    servers = EchoServerFactory(timeout, base_nodeid(item), _shared_loop(item.config))
    try:
        marker = item.get_closest_marker(SERVER_MARKER)
        protocol = marker.kwargs.get("protocol", "echo") if marker else "echo"
        if marker is None:  # the usual case: no marker to read twice
            yield servers()
        elif protocol == "echo":
            kwargs = server_marker_kwargs(item, extra=frozenset({"protocol"}))
            kwargs.pop("protocol", None)
            yield servers(**kwargs)
        else:
            from pytest_multiconn.servers.fakes import handler_factory
            from pytest_multiconn.servers.protocol import ProtocolServer

            kwargs = server_marker_kwargs(item, ProtocolServer, frozenset({"protocol"}))
            kwargs.pop("protocol", None)
            factory = handler_factory(protocol) if isinstance(protocol, str) else protocol
            kwargs.setdefault("timeout", timeout)
            yield servers.adopt(ProtocolServer(factory, **kwargs))
    finally:
        servers.close()


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
