"""Fixtures shared by the tests of the loop, connections and servers."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest

from helpers import loopback_pair
from pytest_multiconn.lowlevel import Loop


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
