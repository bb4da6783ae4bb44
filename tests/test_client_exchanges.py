"""MultiConnClient and client faults with non-echo exchanges, plain and TLS."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest

from pytest_multiconn import MultiConnClient
from pytest_multiconn.exchanges import HTTP, RESP, Exact, LengthPrefixed, Lines
from pytest_multiconn.faults import (
    Burst,
    ConnectClose,
    Garbage,
    HalfClose,
    NeverClose,
    NeverRead,
    PartialSend,
    Silent,
    SlowReader,
)
from pytest_multiconn.faults.client import ClientReset
from pytest_multiconn.servers import HTTPProtocol, LineProtocol, ProtocolServer, RedisProtocol


@pytest.fixture(params=["plain", "tls"])
def tls(request: pytest.FixtureRequest) -> bool:
    return request.param == "tls"


def _upper() -> LineProtocol:
    return LineProtocol(bytes.upper)


def test_line_exchange_against_an_uppercasing_server(tls: bool) -> None:
    with ProtocolServer(_upper, tls=tls) as server:
        results = MultiConnClient(server.address, 4, exchange=Lines(reply=bytes.upper),
                                  requests=5, tls=server.client_tls, seed=1).run()
        results.check()
        wrong = MultiConnClient(server.address, 1, exchange=Lines(), tls=server.client_tls,
                                seed=1).run()
    assert not wrong.ok
    (bad,) = wrong.failed
    assert "reply 0 to b'" in bad.problem
    assert re.search(r"first differing byte at \d+ \(expected 65 B, got 65 B\)", bad.problem)
    assert "reply 0" in str(bad)


@pytest.mark.parametrize(
    "faults",
    [
        [PartialSend(max_chunk=1)],
        [PartialSend(max_chunk=64, delay=0.001)],
        [SlowReader(1024 * 1024, rcvbuf=4096)],
        [HalfClose()],
        [NeverClose()],
        [Silent()],
        [NeverRead(size=256 * 1024, stall=0.05, duration=0.3)],
        [ClientReset("mid")],
        [ConnectClose()],
        [Burst(connections=16)],
    ],
    ids=lambda fs: "+".join(f.name for f in fs),
)
def test_every_client_fault_with_a_line_exchange(faults: list, tls: bool) -> None:
    with ProtocolServer(_upper, tls=tls) as server:
        with MultiConnClient(server.address, 3, exchange=Lines(reply=bytes.upper), requests=8,
                             faults=faults, tls=server.client_tls, seed=7) as client:
            results = client.run()
        assert results.ok, "\n".join(str(r) for r in results.failed)
        # And the server still serves a plain exchange afterwards.
        MultiConnClient(server.address, 2, exchange=Lines(reply=bytes.upper),
                        tls=server.client_tls).run().check()


def test_resp_exchange_pipelined_with_partial_sends(tls: bool) -> None:
    with ProtocolServer(lambda: RedisProtocol({}), tls=tls) as server:
        MultiConnClient(server.address, 3, exchange=RESP(), requests=9,
                        faults=[PartialSend(max_chunk=3)], tls=server.client_tls).run().check()


def test_length_prefixed_and_exact() -> None:
    with ProtocolServer(LineProtocol) as server:
        MultiConnClient(server.address, 2, exchange=Exact(b"hi\n", b"hi\n"), requests=3
                        ).run().check()
        bad = MultiConnClient(server.address, 1, exchange=LengthPrefixed(send=b"x"),
                              timeout=0.5).run()
    assert not bad.ok


def test_http_exchange_without_faults(tls: bool) -> None:
    with ProtocolServer(HTTPProtocol, tls=tls) as server:
        MultiConnClient(server.address, 3, exchange=HTTP(expect_body=b"hello\n"), requests=4,
                        tls=server.client_tls).run().check()


def test_garbage_needs_an_exchange_that_says_what_a_server_answers() -> None:
    with pytest.raises(ValueError, match=r"the line exchange \(Lines\) does not say"):
        MultiConnClient(("127.0.0.1", 1), 1, exchange=Lines(), faults=[Garbage(16)])
    with pytest.raises(ValueError, match="requests must be an integer >= 1"):
        MultiConnClient(("127.0.0.1", 1), 1, exchange=RESP(), requests=0)


class _NotFound(LineProtocol):
    """A key-value server that has no key: every line gets ``NOTFOUND``."""

    def __init__(self) -> None:
        super().__init__(lambda line: b"NOTFOUND")


def test_a_wrong_exact_reply_is_told_in_the_exchanges_terms() -> None:
    # Exact(b"GET nope\n", b"VALUE x\n") against "NOTFOUND\n": not an echo, so no "sent 9/8 B",
    # no "bytes more than sent", no EchoMismatch; the whole reply, not its first 8 bytes.
    from pytest_multiconn.errors import EchoMismatch, ReplyMismatch

    with ProtocolServer(_NotFound) as server:
        results = MultiConnClient(server.address, 1,
                                  exchange=Exact(b"GET nope\n", b"VALUE x\n")).run()
    (bad,) = results.failed
    text = str(bad)
    assert "more than sent" not in text
    assert "echo" not in text
    assert "sent 9/8 B" not in text
    assert "sent 9 B, received 9 B (8 B of replies expected)" in text
    assert "expected b'VALUE x\\n'" in text
    assert "got b'NOTFOUND\\n' (9 B)" in text  # the whole reply
    with pytest.raises(ReplyMismatch, match=r"1 of 1 connections failed") as info:
        results.check()
    assert not isinstance(info.value, EchoMismatch)
    assert isinstance(info.value, AssertionError)


def test_an_echo_that_differs_is_still_an_echo_mismatch() -> None:
    from pytest_multiconn.errors import EchoMismatch, ReplyMismatch

    with ProtocolServer(_NotFound) as server:
        results = MultiConnClient(server.address, 1, [b"GET nope\n"]).run()
    with pytest.raises(EchoMismatch, match="echo differed at byte 0") as info:
        results.check()
    assert isinstance(info.value, ReplyMismatch)  # one except clause catches both


# -- requests= pipelined (back to back) or sequential (send, wait for the reply, send the next)


class _Recording(LineProtocol):
    """A line server (upper-casing, or echoing with ``upper=False``) that records, per
    connection, each chunk it read and how many replies it had sent before reading it.  With
    ``batch=N`` it answers nothing until it has N lines (then all of them)."""

    log: ClassVar[list[list[tuple[bytes, int]]]] = []
    upper = True
    batch = 0

    def __init__(self) -> None:
        super().__init__(bytes.upper if self.upper else None)
        self.chunks: list[tuple[bytes, int]] = []
        self.replied = 0
        self.held = bytearray()
        _Recording.log.append(self.chunks)

    def data_received(self, data: bytes) -> None:
        self.chunks.append((data, self.replied))
        if self.batch:
            self.held += data
            if self.held.count(b"\n") < self.batch:
                return
            data, self.held = bytes(self.held), bytearray()
        super().data_received(data)
        self.replied += data.count(b"\n")


@pytest.fixture(params=["exchange", "echo"])
def three_requests(request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Client arguments for three requests: an exchange's, or an echo client's messages."""
    monkeypatch.setattr(_Recording, "log", [])
    monkeypatch.setattr(_Recording, "upper", request.param == "exchange")
    if request.param == "exchange":
        return {"exchange": Lines(reply=bytes.upper), "requests": 3, "seed": 7}
    return {"messages": [b"one\n", b"two\n", b"three\n"]}


def test_sequential_requests_wait_for_each_reply(three_requests: dict[str, object]) -> None:
    with ProtocolServer(_Recording) as server:
        MultiConnClient(server.address, 1, pipeline=False,  # type: ignore[arg-type]
                        **three_requests).run().check()
    (chunks,) = _Recording.log
    # Each request arrived alone, after the reply to the one before it had been sent.
    assert [replied for _, replied in chunks] == [0, 1, 2]
    assert [chunk.count(b"\n") for chunk, _ in chunks] == [1, 1, 1]


def test_pipelined_requests_do_not_wait_for_replies(
    three_requests: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that answers only once it has all three requests: pipelined (the default)
    # gets its replies; sequential waits for a first reply that never comes.
    monkeypatch.setattr(_Recording, "batch", 3)
    with ProtocolServer(_Recording) as server:
        MultiConnClient(server.address, 1, **three_requests).run().check()  # type: ignore[arg-type]
        waiting = MultiConnClient(server.address, 1, pipeline=False, timeout=0.5,  # type: ignore[arg-type]
                                  **three_requests).run()
    assert not waiting.ok
    pipelined, sequential = _Recording.log
    assert b"".join(chunk for chunk, _ in pipelined).count(b"\n") == 3
    assert b"".join(chunk for chunk, _ in sequential).count(b"\n") == 1  # the first only
    assert "timed out" in str(waiting[0])


def test_sequential_requests_are_refused_with_faults() -> None:
    with pytest.raises(ValueError, match=r"pipeline=False .*faults"):
        MultiConnClient(("127.0.0.1", 1), 1, exchange=Lines(), pipeline=False,
                        faults=[PartialSend(max_chunk=1)])
    with pytest.raises(TypeError, match=r"pipeline must be True or False, got 'no'"):
        MultiConnClient(("127.0.0.1", 1), 1, pipeline="no")  # type: ignore[arg-type]
