"""``answers_garbage=`` / ``error_prefix=`` on Lines, Exact, LengthPrefixed and Framed: the user
says what their server answers to garbage, and the Garbage fault then runs and judges it."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_multiconn import MultiConnClient
from pytest_multiconn.exchanges import Exact, Framed, LengthPrefixed, Lines
from pytest_multiconn.faults import Garbage
from pytest_multiconn.servers import LineProtocol, ProtocolServer


class _ErrorThenClose:
    """A line server that uppercases lines and answers anything unprintable with an error
    line, then hangs up (what many text protocols do)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if not all(0x20 <= b < 0x7F for b in line.rstrip(b"\r")):
                self.transport.write(b"ERR bad request\n")
                self.transport.close()
                return
            self.transport.write(line.upper() + b"\n")

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        pass


LINES = Lines(reply=bytes.upper, answers_garbage={"close", "error"}, error_prefix=b"ERR")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_garbage_runs_where_the_user_says_what_the_server_answers(tls: bool) -> None:
    with ProtocolServer(_ErrorThenClose, tls=tls) as server:
        results = MultiConnClient(server.address, 3, exchange=LINES, faults=[Garbage(256)],
                                  tls=server.client_tls, seed=4, timeout=10).run()
        results.check()
        assert all("answered garbage with error" in r.note for r in results), [
            r.note for r in results]
        # And the server still serves a well-behaved client afterwards.
        MultiConnClient(server.address, 2, exchange=LINES, tls=server.client_tls,
                        seed=5).run().check()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_an_answer_the_user_did_not_allow_fails(tls: bool) -> None:
    # A line echo server sends the garbage's lines back: a reply, not close or an error.
    with ProtocolServer(LineProtocol, tls=tls) as server:
        results = MultiConnClient(server.address, 1, exchange=LINES, faults=[Garbage(256)],
                                  tls=server.client_tls, seed=4, timeout=10).run()
    assert not results.ok
    error = str(results.failed[0])
    assert "answered garbage with reply" in error, error
    assert "may answer close, error" in error, error


@pytest.mark.parametrize(
    "make",
    [
        Lines,
        lambda **kw: Exact(b"a", b"b", **kw),
        LengthPrefixed,
        lambda **kw: Framed(b"a", lambda buf, eof: len(buf) or None, **kw),
    ],
    ids=["Lines", "Exact", "LengthPrefixed", "Framed"],
)
def test_the_parameters_are_validated_where_given(make: Any) -> None:
    assert make().garbage_answers() is None
    assert make(answers_garbage={"close"}).garbage_answers() == {"close"}
    assert make(answers_garbage=["error"], error_prefix="-").is_error_reply(b"-ERR x")
    with pytest.raises(ValueError, match="answers_garbage has 'error', but nothing tells"):
        make(answers_garbage={"error"})
    with pytest.raises(ValueError, match=r"subset of .*got \['boom'\]"):
        make(answers_garbage={"boom"})
    with pytest.raises(TypeError, match="answers_garbage must be a set of strings"):
        make(answers_garbage="close")
    with pytest.raises(ValueError, match="error_prefix must not be empty"):
        make(answers_garbage={"error"}, error_prefix=b"")
