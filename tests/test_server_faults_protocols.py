"""Every stream fault over a non-echo protocol (a ProtocolServer hosting a line handler, with
``faults=``), seen by a client speaking that protocol."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from pytest_multiconn import ClientResults, MultiConnClient
from pytest_multiconn.exchanges import Lines
from pytest_multiconn.faults import Latency, LimitData, ResetPeer, Slicer, Timeout, When
from pytest_multiconn.servers import LineProtocol, ProtocolServer

UPPER = Lines(reply=bytes.upper)


def _upper() -> LineProtocol:
    return LineProtocol(bytes.upper)


@pytest.fixture(params=["plain", "tls"])
def tls(request: pytest.FixtureRequest) -> bool:
    return request.param == "tls"


def _run(server: ProtocolServer, n: int = 2, **kwargs: Any) -> ClientResults:
    return MultiConnClient(server.address, n, exchange=UPPER, requests=4, seed=3,
                           tls=server.client_tls, **kwargs).run()


def test_delay_delays_the_replies(tls: bool) -> None:
    with ProtocolServer(_upper, tls=tls, faults=[Latency(ms=50)]) as server:
        start = time.monotonic()
        results = _run(server)
        results.check()
    assert time.monotonic() - start >= 0.05
    assert all(r.elapsed >= 0.05 for r in results)


def test_chunked_replies_stay_right(tls: bool) -> None:
    with ProtocolServer(_upper, tls=tls, faults=[Slicer(average_size=1)]) as server:
        _run(server).check()
        assert [f.name for f in server.faults()] == ["slicer_downstream"]


def test_stall_swallows_requests(tls: bool) -> None:
    with ProtocolServer(_upper, tls=tls, faults=[Timeout()]) as server:
        results = _run(server, 1, timeout=0.3)
    assert not results.ok
    assert "4 of 4 replies missing" in results[0].problem


@pytest.mark.parametrize(
    "fault", [LimitData(bytes=70), When(ResetPeer(drop=True), after_bytes=70)], ids=repr)
def test_cut_after_n_reply_bytes(fault: Any, tls: bool) -> None:
    with ProtocolServer(_upper, tls=tls, faults=[fault]) as server:
        results = _run(server, 1)
    (result,) = results
    assert not result.ok
    # An RST may overtake the bytes before it (the kernel drops what was unread): at most N.
    assert result.received <= 70 + 65
    # The cut shows as a close, a reset or a broken pipe (a close with our requests unread
    # becomes an RST), always with the replies that never came.
    assert result.error is not None
    assert "reply 1" in result.problem or "replies missing" in result.problem


def test_accept_then_close_and_stop_accepting(tls: bool) -> None:
    with ProtocolServer(_upper, tls=tls, faults=[LimitData(bytes=0)]) as server:
        results = _run(server, 1, timeout=2)
    assert not results.ok
    with ProtocolServer(_upper, tls=tls) as server:
        server.pause_accepting()
        server.resume_accepting()
        _run(server, 1).check()
        server.pause_accepting()
        with socket.socket() as s:
            s.settimeout(0.2)
            s.connect(server.address)  # the kernel completes it: nobody accepts
            s.sendall(b"x\n")
            with pytest.raises(TimeoutError):
                s.recv(10)
