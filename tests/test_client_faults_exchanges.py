"""Every client fault with non-echo exchanges, plain and TLS, over real loopback.

Four exchanges against the fakes that speak them: a line protocol (exact replies, the byte
path), HTTP (replies parsed by h11, judged by the exchange's reader), RESP with exact replies
and RESP with commands whose replies are only parsed.  Each fault must pass against the right
server, and the faults that read replies must catch a server that answers wrongly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_multiconn import ClientResults, MultiConnClient
from pytest_multiconn.exchanges import HTTP, RESP, Exchange, Lines
from pytest_multiconn.faults import (
    Burst,
    ClientFault,
    ClientReset,
    ConnectClose,
    Garbage,
    HalfClose,
    Latency,
    LimitData,
    NeverClose,
    NeverRead,
    PartialSend,
    Silent,
    Slicer,
    SlowReader,
    Timeout,
    catalogue,
)
from pytest_multiconn.servers import HTTPProtocol, LineProtocol, ProtocolServer, RedisProtocol

REQUESTS = 6


@dataclass(frozen=True)
class Case:
    """An exchange, the fake that answers it right, and one that answers it wrong."""

    name: str
    exchange: Exchange
    right: Callable[[], Any]
    wrong: Callable[[], Any]
    #: The server answers garbage with one of these (None: Garbage is refused).
    garbage: frozenset[str] | None
    #: A fake answering garbage with a reply that is not an error (for the Garbage check).
    wrong_garbage: Callable[[], Any] | None = None

    def __str__(self) -> str:
        return self.name


def _lines_answering(reply: bytes) -> Callable[[], LineProtocol]:
    return lambda: LineProtocol(lambda line: reply)


CASES = [
    Case("line", Lines(reply=bytes.upper), lambda: LineProtocol(bytes.upper), LineProtocol,
         None),
    Case("http", HTTP(expect_body=b"hello\n"), HTTPProtocol,
         lambda: HTTPProtocol(lambda method, target, body: b"bye\n"), frozenset({"close", "error"}),
         # A "200 OK" status line for every line of garbage: not an error reply.
         _lines_answering(b"HTTP/1.1 200 OK\r")),
    Case("redis", RESP(), lambda: RedisProtocol({}),
         # Every RESP line of a request answered with an error (a LineProtocol splits on \n).
         _lines_answering(b"-ERR no\r"), frozenset({"close", "error", "nothing"}),
         _lines_answering(b"+OK\r")),
    # Commands without fixed replies: parsed, any non-error reply is right.
    Case("redis-parsed", RESP(commands=[["PING"], ["ECHO", "hi"], ["DEL", "nokey"]]),
         lambda: RedisProtocol({}), _lines_answering(b"-ERR no\r"),
         frozenset({"close", "error", "nothing"}), _lines_answering(b"+OK\r")),
]

FAULTS: list[ClientFault] = [
    PartialSend(max_chunk=1),
    SlowReader(64 * 1024, rcvbuf=4096),
    NeverRead(size=256 * 1024, stall=0.05, duration=1.0),
    NeverClose(),
    Silent(),
    HalfClose(),
    ClientReset("before"),
    ClientReset("mid"),
    ClientReset("after"),
    Garbage(2048),
    Burst(connections=12),
    ConnectClose(),
]


def _fid(fault: ClientFault) -> str:
    at = getattr(fault, "at", None)
    return f"{fault.name}-{at}" if at else fault.name


@pytest.fixture(params=["plain", "tls"])
def tls(request: pytest.FixtureRequest) -> bool:
    return request.param == "tls"


def _run(server: ProtocolServer, case: Case, faults: list[ClientFault], n: int = 3,
         **kwargs: Any) -> ClientResults:
    kwargs.setdefault("timeout", 10)
    return MultiConnClient(server.address, n, exchange=case.exchange, requests=REQUESTS,
                           faults=faults, tls=server.client_tls, seed=11, **kwargs).run()


def _failures(results: ClientResults) -> str:
    return "\n".join(f"{r}\n{r.transcript}" for r in results.failed)


def test_the_cases_cover_the_whole_catalogue() -> None:
    assert {f.name for f in FAULTS} == {f.name for f in catalogue()}
    # HTTP and the parsed RESP judge replies by parsing: the paths this file is about.
    for case in CASES[1], CASES[3]:
        (request,) = case.exchange.requests(1, random.Random(0))
        assert case.exchange.expected(request) is None


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("fault", FAULTS, ids=_fid)
def test_every_client_fault_against_a_right_server(
    case: Case, fault: ClientFault, tls: bool
) -> None:
    with ProtocolServer(case.right, tls=tls) as server:
        if isinstance(fault, Garbage) and case.garbage is None:
            with pytest.raises(ValueError, match=r"the line exchange \(Lines\) does not say"):
                _run(server, case, [fault])
            return
        results = _run(server, case, [fault])
        assert results.ok, _failures(results)
        _check_what_the_fault_did(case, fault, results)
        # The server still serves everyone else afterwards.
        after = _run(server, case, [])
        assert after.ok, _failures(after)


def _check_what_the_fault_did(case: Case, fault: ClientFault, results: ClientResults) -> None:
    if isinstance(fault, PartialSend):
        for r in results:
            assert len(r.send_sizes) > 1
            assert set(r.send_sizes) == {1}, r.send_sizes
            assert r.received > 0
    elif isinstance(fault, NeverRead):
        assert all("without reading" in r.note for r in results), [r.note for r in results]
        # Another protocol gets whole requests pipelined, never random bytes.
        assert all("pipelining" in r.note for r in results)
        assert all(r.received == 0 for r in results)
    elif isinstance(fault, NeverClose | Silent):
        assert all(r.lingering for r in results)
        if isinstance(fault, Silent):
            assert all(r.sent == 0 and r.received == 0 for r in results)
    elif isinstance(fault, ClientReset):
        assert all("RST" in r.note for r in results), [r.note for r in results]
    elif isinstance(fault, Garbage):
        assert case.garbage is not None
        for r in results:
            answer = r.note.rsplit("answered garbage with ", 1)[-1]
            assert answer in case.garbage, r.note
    elif isinstance(fault, Burst):
        assert len(results) == fault.connections
        assert all(r.received > 0 for r in results)
    elif isinstance(fault, ConnectClose):
        assert all(r.sent == 0 for r in results)
    else:
        assert all(r.received > 0 for r in results)


#: The faults that read and judge replies: a wrong reply must fail them.
READING = [f for f in FAULTS if isinstance(f, PartialSend | SlowReader | NeverClose | HalfClose
                                              | Burst)]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("fault", READING, ids=_fid)
def test_a_wrong_reply_is_caught_under_every_reading_fault(
    case: Case, fault: ClientFault, tls: bool
) -> None:
    with ProtocolServer(case.wrong, tls=tls) as server:
        results = _run(server, case, [fault], n=2)
    assert results.failed, "a server answering wrongly passed"
    for r in results.failed:
        # Which reply, and why, in the result.
        assert "reply 0 to" in r.problem, str(r)
        if case.name in ("line", "redis"):
            assert "first differing byte at" in r.problem, r.problem
        elif case.name == "http":
            assert "body differs" in r.problem, r.problem
        else:
            assert "error reply" in r.problem, r.problem


class _Mute:
    """Reads everything, answers nothing; at the client's EOF it closes."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


@pytest.mark.parametrize("case", CASES, ids=str)
def test_half_close_catches_replies_lost_at_eof(case: Case, tls: bool) -> None:
    with ProtocolServer(_Mute, tls=tls) as server:
        results = _run(server, case, [HalfClose()], n=1, timeout=1 if tls else 5)
    (r,) = results
    assert not r.ok
    # Over TLS HalfClose waits for every reply before its EOF, so the mute server never
    # closes: a timeout that says which replies are missing.
    assert ("lost on half-close" in (r.error or "")) or ("timed out" in (r.error or "")), str(r)
    assert f"{REQUESTS} of {REQUESTS} replies missing" in r.problem, r.problem


@pytest.mark.parametrize("case", [c for c in CASES if c.wrong_garbage is not None], ids=str)
def test_garbage_answered_with_a_plain_reply_fails(case: Case, tls: bool) -> None:
    assert case.wrong_garbage is not None
    with ProtocolServer(case.wrong_garbage, tls=tls) as server:
        results = _run(server, case, [Garbage(2048)], n=2)
    assert len(results.failed) == 2
    for r in results.failed:
        assert "answered garbage with reply b'" in r.problem, r.problem
        assert f"a {case.exchange.name} server may answer" in r.problem


def test_garbage_answered_with_silence_where_the_protocol_allows_it(tls: bool) -> None:
    # A RESP server waits for the rest of an inline command without a line end: nothing.
    with ProtocolServer(_Mute, tls=tls) as server:
        results = _run(server, CASES[2], [Garbage(512, quiet=0.05)], n=2)
        assert results.ok, _failures(results)
        assert all("answered garbage with nothing" in r.note for r in results)
        # HTTP does not allow silence: the timeout says what was awaited.
        http = _run(server, CASES[1], [Garbage(512)], n=1, timeout=0.5)
    (r,) = http
    assert not r.ok
    assert "waiting for an answer to" in (r.error or ""), str(r)
    assert "may answer close, error" in (r.error or "")


def test_garbage_refusal_names_the_exchange_and_what_to_set() -> None:
    with pytest.raises(ValueError, match="Garbage") as info:
        MultiConnClient(("127.0.0.1", 1), 1, exchange=Lines(), faults=[Garbage(16)])
    text = str(info.value)
    assert "the line exchange (Lines) does not say" in text
    assert "answers_garbage" in text
    assert "default_garbage_answers" in text


@pytest.mark.parametrize("case", CASES[1:], ids=str)
@pytest.mark.parametrize(
    "faults",
    [
        [PartialSend(max_chunk=5, delay=0.001), HalfClose()],
        [SlowReader(32 * 1024, rcvbuf=4096), NeverClose()],
        [PartialSend(max_chunk=64), Garbage(1024)],
        [Silent(probability=0.5), PartialSend(max_chunk=3)],
    ],
    ids=lambda fs: "+".join(f.name for f in fs),
)
def test_faults_compose_with_parsed_and_exact_exchanges(
    case: Case, faults: list[ClientFault], tls: bool
) -> None:
    with ProtocolServer(case.right, tls=tls) as server:
        results = _run(server, case, faults, n=4)
    assert results.ok, _failures(results)
    assert all(r.faults for r in results)


# --- server faults over parsed protocols ----------------------------------------------------


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=str)
@pytest.mark.parametrize(
    "fault",
    [Latency(ms=20), Slicer(average_size=1), Timeout(), LimitData(bytes=20),
     LimitData(bytes=20, reset=True), LimitData(bytes=0)],
    ids=repr,
)
def test_server_faults_seen_through_a_parsed_exchange(case: Case, fault: Any, tls: bool) -> None:
    with ProtocolServer(case.right, tls=tls, faults=[fault]) as server:
        results = _run(server, case, [], n=2, timeout=1 if isinstance(fault, Timeout) else 5)
    if isinstance(fault, Latency | Slicer):
        assert results.ok, _failures(results)
        assert all(r.received >= 38 for r in results)  # every reply (38 B for RESP)
        return
    # Every cut shows as replies missing (or one cut short), named per connection.
    assert len(results.failed) == 2
    for r in results.failed:
        assert "replies missing" in r.problem or "unparsable" in r.problem, str(r)


def test_multiconn_fault_runs_every_fault_an_exchange_supports(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_multiconn import MultiConnClient
        from pytest_multiconn.exchanges import HTTP, Lines
        from pytest_multiconn.servers import HTTPProtocol, LineProtocol, ProtocolServer

        @pytest.mark.multiconn_exchange(HTTP())
        def test_http_fault(multiconn_fault):
            with ProtocolServer(HTTPProtocol) as server:
                with MultiConnClient(server.address, 2, exchange=HTTP(), requests=3,
                                     faults=[multiconn_fault], timeout=20) as client:
                    results = client.run()
                    assert results.ok, [str(r) for r in results.failed]

        @pytest.mark.multiconn_exchange(Lines())
        def test_line_fault(multiconn_fault):
            with ProtocolServer(LineProtocol) as server:
                with MultiConnClient(server.address, 2, exchange=Lines(), requests=3,
                                     faults=[multiconn_fault], timeout=20) as client:
                    assert client.run().ok
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    # HTTP says what a server answers to garbage: all 10 faults; Lines does not: 9.
    result.assert_outcomes(passed=19, deselected=1)
    result.stdout.no_fnmatch_line("*test_http_fault?garbage*DESELECTED*")
