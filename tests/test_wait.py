"""The one bounded wait (core/wait.py): the polling ``wait_until``, a loop driven in the
caller's thread (``Loop.run_until``) and a server's notified waits share its deadline, its
``timeout`` check and its failure message."""

from __future__ import annotations

import math
import socket

import pytest

from pytest_multiconn import EchoServer
from pytest_multiconn.errors import WaitTimeout
from pytest_multiconn.lowlevel import Loop, wait_until

BAD_TIMEOUTS = [-1, math.nan, math.inf, True, "1"]


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    def third_time() -> str:
        calls.append(1)
        return "ready" if len(calls) == 3 else ""

    assert wait_until(third_time, 5.0, "the third look") == "ready"
    assert len(calls) == 3


def test_wait_until_names_what_it_waited_for_and_the_state() -> None:
    looks: list[int] = []
    message = r"timed out after 0s waiting for the moon\nstate: 1 look"
    with pytest.raises(WaitTimeout, match=message):
        wait_until(lambda: looks.append(1), 0, "the moon", describe=lambda: f"{len(looks)} look")
    assert looks == [1]  # timeout=0: one look, no wait


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS)
def test_every_wait_refuses_the_same_timeouts(timeout: object, driven_loop: Loop) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a non-negative"):
        wait_until(lambda: True, timeout)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^timeout must be a non-negative"):
        driven_loop.run_until(lambda: True, timeout)  # type: ignore[arg-type]
    with EchoServer() as server, pytest.raises(ValueError, match=r"^timeout must be a non-neg"):
        server.wait_for_connections(1, timeout=timeout)  # type: ignore[arg-type]


def test_run_until_drives_the_loop_until_the_condition(driven_loop: Loop) -> None:
    fired: list[str] = []
    driven_loop.call_soon(fired.append, "callback")
    assert driven_loop.run_until(lambda: bool(fired), 5.0)
    assert fired == ["callback"]
    assert not driven_loop.run_until(lambda: False, 0)  # ran out: False, not an error


def test_a_server_wait_wakes_on_the_loops_notification() -> None:
    # A real connection: the accept notifies the waiter, which returns the stats it saw.
    with EchoServer() as server, socket.create_connection(server.address, timeout=5):
        stats = server.wait_for_connections(1, timeout=5)
        assert stats.open == 1
        with pytest.raises(WaitTimeout, match="waiting for 2 open connections"):
            server.wait_for_connections(2, timeout=0)
