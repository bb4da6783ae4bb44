"""The never_read row's judgement that a server stopped reading (``rows.never_read.StallWindow``).

It counts what the *server* read of ours in a window, with our bytes waiting in its receive
queue, not what our pusher sent: a pusher that was itself not scheduled for a window sends
nothing, and that once made an in-loop asyncio server that never drains look like one that
pushes back (a pass in a CI run under load).  Both conditions are forced here, over real
loopback sockets, by calling the window with the clock the test chooses: a server that read
everything and waits for us is never "stopped", whatever we sent; one whose receive queue
holds our bytes unread is, after one window for a server in another process and after
``OWN_PROCESS_WINDOWS`` for one in ours (it cannot be seen waiting for the GIL or a CPU).
"""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace
from typing import cast

import pytest

from helpers import RawPlainClient, loopback_pair
from pytest_multiconn.core.wait import wait_until
from pytest_multiconn.suite.context import Context
from pytest_multiconn.suite.probes import peer_queues
from pytest_multiconn.suite.rows.never_read import (
    OWN_PROCESS_WINDOWS,
    STALL_WINDOW,
    StallWindow,
)


def _ctx(*, own: bool) -> Context:
    # The tree of a server the row cannot schedule-watch: in our own process, or not visible.
    return cast("Context", SimpleNamespace(tree=SimpleNamespace(visible=False, own=own)))


def _windows(window: StallWindow, start: float, count: int, sent: int) -> list[bool]:
    return [window.stopped(start + STALL_WINDOW * (i + 1) + 1e-3, sent) for i in range(count)]


@pytest.mark.parametrize("own", [True, False])
def test_a_server_waiting_for_us_has_not_stopped_reading(own: bool) -> None:
    ours, peer = loopback_pair()
    received = bytearray()
    done = threading.Event()

    def read_all() -> None:
        while chunk := peer.recv(65536):
            received.extend(chunk)
        done.set()

    reader = threading.Thread(target=read_all, name="test-reader", daemon=True)
    reader.start()
    try:
        window = StallWindow(_ctx(own=own), ours, 0)
        ours.sendall(b"x" * 1000)
        wait_until(lambda: len(received) == 1000, 5.0, "the server to read our 1,000 bytes")
        # We send nothing more (as a pusher that was not scheduled does): the server read
        # all there was, so no window counts it as stopped.
        assert _windows(window, time.monotonic(), 2 * OWN_PROCESS_WINDOWS, 1000) == [False] * (
            2 * OWN_PROCESS_WINDOWS)
    finally:
        ours.close()
        assert done.wait(5.0), "the reader thread did not see our close"
        reader.join(5.0)
        peer.close()


@pytest.mark.parametrize("own", [True, False])
def test_a_server_leaving_our_bytes_unread_has_stopped_reading(own: bool) -> None:
    ours, peer = loopback_pair()
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        window = StallWindow(_ctx(own=own), ours, 0)
        # Fill both queues: the server never reads.
        sent = RawPlainClient(ours).send_until_blocked(b"y" * 65536, 64 * 1024 * 1024)
        queues = peer_queues(ours)
        assert queues is not None, "the server end's queues cannot be seen on this kernel"
        assert queues[0] > 0, f"nothing waits in the server's receive queue: {queues}"
        needed = OWN_PROCESS_WINDOWS if own else 1
        assert _windows(window, time.monotonic(), needed, sent) == [False] * (needed - 1) + [True]
    finally:
        ours.close()
        peer.close()
