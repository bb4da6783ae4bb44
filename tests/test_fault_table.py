"""One fault table (issue 23): the TCP proxy, a server and the UDP proxy name, list, update,
remove and refuse faults the same way, on live connections too."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import WAIT, connect, recv_exactly
from pytest_multiconn import EchoServer
from pytest_multiconn.faults import FaultInfo, Latency, LimitData, Slicer
from pytest_multiconn.proxy import FaultProxy
from pytest_multiconn.udp import Drop, Duplicate, UDPEchoServer, UDPFaultProxy


@pytest.fixture(params=["proxy", "server"])
def owner(request: pytest.FixtureRequest, multiconn_server: EchoServer) -> Iterator[Any]:
    """A started FaultProxy (in front of an echo server) or a started EchoServer."""
    made = (FaultProxy(multiconn_server, timeout=WAIT) if request.param == "proxy"
            else EchoServer(timeout=WAIT))
    with made:
        yield made


def _message(call: Callable[[], object], error: type[Exception]) -> str:
    with pytest.raises(error) as info:
        call()
    # The owner's name is the only part that differs between owners.
    return re.sub(r"on (proxy|server) [^\s;]+", "on OWNER", str(info.value))


def test_names_listing_and_errors_are_the_same_everywhere(owner: Any) -> None:
    assert owner.faults() == []
    assert owner.add(Latency(ms=1)) == "latency_downstream"
    assert owner.add(Latency(ms=2)) == "latency_downstream_2"
    assert owner.add(Slicer(average_size=4), "upstream", 0.5, name="cut") == "cut"
    assert owner.faults() == [
        FaultInfo("latency_downstream", Latency(ms=1), "downstream", 1.0),
        FaultInfo("latency_downstream_2", Latency(ms=2), "downstream", 1.0),
        FaultInfo("cut", Slicer(average_size=4), "upstream", 0.5),
    ]
    if isinstance(owner, FaultProxy):  # its failure report lists them, one line each
        lines = owner.report().splitlines()
        assert "  fault latency_downstream: Latency(ms=1) direction=downstream" in lines
        assert any(line.startswith("  fault cut: Slicer(") and
                   line.endswith(" direction=upstream probability=0.5") for line in lines)
    assert owner.update("cut", average_size=8, probability=0.25) == Slicer(average_size=8)
    assert owner.faults()[2] == FaultInfo("cut", Slicer(average_size=8), "upstream", 0.25)
    assert _message(lambda: owner.add(Latency(ms=1), name="cut"), ValueError) == (
        "a fault named 'cut' is already on OWNER; remove() it or update() it, or pick "
        "another name")
    assert _message(lambda: owner.remove("nope"), KeyError) == (
        "\"no fault named 'nope' on OWNER (configured: latency_downstream, "
        "latency_downstream_2, cut)\"")
    assert _message(lambda: owner.add("latency"), TypeError).startswith(
        "faults are stream faults such as Latency(ms=50)")
    for bad in (1.5, -0.1, math.nan, True, "1"):
        assert _message(lambda bad=bad: owner.add(Latency(ms=1), probability=bad),
                        ValueError) == f"probability must be a number from 0 to 1, got {bad!r}"
        assert _message(lambda bad=bad: owner.update("cut", probability=bad),
                        ValueError) == f"probability must be a number from 0 to 1, got {bad!r}"
    assert _message(lambda: owner.add(Latency(ms=1), "sideways"), ValueError).startswith(
        "direction must be")
    assert _message(lambda: owner.add(Latency(ms=1), name=""), ValueError) == (
        "name must be a non-empty string or None, got ''")
    owner.remove("latency_downstream")
    assert [f.name for f in owner.faults()] == ["latency_downstream_2", "cut"]
    owner.clear()
    assert owner.faults() == []


def test_a_fault_added_and_removed_acts_on_a_live_connection(owner: Any) -> None:
    """The table reaches the owner's live connections: LimitData added while a client is
    connected cuts that client's stream; removed, the next client is echoed in full."""
    with connect(owner.address) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        name = owner.add(LimitData(bytes=3))
        sock.sendall(b"abcdef")
        assert recv_exactly(sock, 3) == b"abc"
        assert sock.recv(16) == b""  # the limit closed it
    owner.remove(name)
    with connect(owner.address) as sock:
        sock.sendall(b"abcdef")
        assert recv_exactly(sock, 6) == b"abcdef"


def test_the_udp_proxy_keeps_the_same_table() -> None:
    with UDPEchoServer() as server, UDPFaultProxy(server, timeout=WAIT) as proxy:
        assert proxy.add(Drop(probability=0.5), "upstream") == "drop_upstream"
        assert proxy.add(Drop(), "upstream") == "drop_upstream_2"
        assert proxy.add(Duplicate(), "both", name="dup") == "dup"
        assert proxy.faults() == [
            FaultInfo("drop_upstream", Drop(probability=0.5), "upstream", 1.0),
            FaultInfo("drop_upstream_2", Drop(), "upstream", 1.0),
            FaultInfo("dup", Duplicate(), "both", 1.0),
        ]
        # No per-session draw here, so the report shows none; the fault's own probability is
        # drawn per datagram.
        report = proxy.report()
        assert "fault drop_upstream: Drop(probability=0.5) direction=upstream\n" in report
        assert "probability=1" not in report
        # probability= is the datagram fault's own parameter here (drawn per datagram).
        assert proxy.update("drop_upstream", probability=0.25) == Drop(probability=0.25)
        with pytest.raises(ValueError, match="a fault named 'dup' is already on UDP proxy"):
            proxy.add(Drop(), name="dup")
        with pytest.raises(KeyError, match="no fault named 'nope' on UDP proxy"):
            proxy.remove("nope")
        with pytest.raises(TypeError, match=r"^faults are datagram faults such as Drop"):
            proxy.add(Latency(ms=1))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^name must be a non-empty string"):
            proxy.add(Drop(), name="")
        proxy.clear()
        assert proxy.faults() == []
