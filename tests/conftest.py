"""Shared fixtures of the test suite: an isolated ``pytester`` and the loop/socket fixtures
of the core tests.

Inner pytest runs (``pytester``) see only the plugins they ask for.  Without this, an inner
run loads every plugin installed in the environment through its entry point, pytest-randomly
included (``-p no:randomly`` on the outer command line does not reach it): it reorders and
reseeds the inner tests, and tests that depend on the order of two inner tests fail about
half the time.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest

from helpers import loopback_pair
from pytest_multiconn.lowlevel import Loop

#: What every inner run loads: our plugin, by module name (the entry point is not read).
INNER_PLUGINS = "pytest_multiconn.plugin"


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's ``pytester``, isolated from the plugins installed in this environment.

    Entry-point autoloading is off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) and our plugin is
    loaded through ``PYTEST_PLUGINS``, which works the same for in-process and subprocess
    runs on every pytest we support.  A test that needs another plugin asks for it
    (``-p xdist``); one that tests ``-p no:multiconn`` undoes this with ``monkeypatch``.
    """
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTEST_PLUGINS", INNER_PLUGINS)
    return pytester


@pytest.fixture(params=["epoll", "poll"])
def driven_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    """A loop driven from the test thread, on epoll (the fast path) and on poll (the plain
    ``selector.select()`` path other platforms take)."""
    if request.param == "poll":
        monkeypatch.setattr(selectors, "DefaultSelector", selectors.PollSelector)
    elif not hasattr(selectors, "EpollSelector"):
        pytest.skip("no epoll here")
    lp = Loop(f"multiconn-driven-{request.param}")
    try:
        yield lp
    finally:
        lp.close()


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected loopback TCP sockets: (ours, the peer's)."""
    ours, peer = loopback_pair()
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()
