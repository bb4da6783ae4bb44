"""Exchanges: framing, judging and reporting of replies, protocol by protocol."""

from __future__ import annotations

import random

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_multiconn.exchanges import (
    HTTP,
    RESP,
    Echo,
    Exact,
    Framed,
    LengthPrefixed,
    Lines,
    ReplyReader,
    by_name,
    describe_difference,
    encode_command,
    matching,
    resp_length,
)


def test_echo_pipelined_replies_split_in_order() -> None:
    ex = Echo(size=5)
    reqs = ex.requests(3, random.Random(1))
    reader = ReplyReader(ex, reqs)
    stream = b"".join(reqs)
    done = [o for b in stream for o in reader.feed(bytes([b]))]
    assert [o.index for o in done] == [0, 1, 2]
    assert reader.ok
    assert reader.first_problem() is None


def test_mismatch_names_request_offset_and_both_sides() -> None:
    ex = Lines(reply=bytes.upper, send=b"hello")
    reader = ReplyReader(ex, ex.requests(2, random.Random(0)))
    reader.feed(b"HELLO\nHELxO\n")
    problem = reader.first_problem()
    assert problem is not None
    assert problem.startswith("reply 1 to b'hello\\n'")
    assert "first differing byte at 3" in problem
    assert "expected b'HELLO\\n'" in problem
    assert "got b'HELxO\\n'" in problem


def test_missing_and_extra_replies_are_reported() -> None:
    ex = Exact(b"ping", b"pong")
    reader = ReplyReader(ex, ex.requests(2, random.Random(0)))
    reader.feed(b"pongpo")
    reader.eof()
    assert "1 of 2 replies missing, first: reply 1" in (reader.first_problem() or "")
    reader2 = ReplyReader(ex, ex.requests(1, random.Random(0)))
    reader2.feed(b"pongXX")
    assert "2 B more than the expected replies" in (reader2.first_problem() or "")


def test_describe_difference_length_only() -> None:
    assert describe_difference(b"abc", b"abc") == ""
    assert "first differing byte at 2" in describe_difference(b"abc", b"ab")


def test_length_prefixed_frames_by_its_prefix() -> None:
    ex = LengthPrefixed(prefix=2, reply=bytes.upper, send=b"abc")
    (req,) = ex.requests(1, random.Random(0))
    assert req == b"\x00\x03abc"
    assert ex.frame(req, b"\x00\x03AB") is None
    assert ex.frame(req, b"\x00\x03ABCrest") == 5
    assert ex.check(req, b"\x00\x03ABC") is None
    with pytest.raises(ValueError, match="prefix must be"):
        LengthPrefixed(prefix=3)


def test_framed_uses_the_users_framer_and_checker() -> None:
    def framer(buf: bytes, eof: bool) -> int | None:
        return buf.index(b";") + 1 if b";" in buf else None

    ex = Framed(b"q", framer, checker=matching(rb"ok\d+;"))
    reader = ReplyReader(ex, ex.requests(2, random.Random(0)))
    reader.feed(b"ok1;no;")
    assert "does not match" in (reader.first_problem() or "")
    bad = Framed(b"q", lambda buf, eof: len(buf) + 1)
    reader = ReplyReader(bad, [b"q"])
    reader.feed(b"x")
    assert ("unparsable reply: the framer's result for a 1 B buffer must be an integer "
            "between 0 and 1, got 2") in (reader.first_problem() or "")


def test_http_request_is_made_and_replies_framed_by_h11() -> None:
    ex = HTTP(method="POST", target="/x", body=b"data", expect_body=b"done")
    (req,) = ex.requests(1, random.Random(0))
    # h11, as a server, reads back exactly the request we described.
    server = h11.Connection(h11.SERVER)
    server.receive_data(req)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    assert (event.method, event.target) == (b"POST", b"/x")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndone\r\n0\r\n\r\n"
    reader = ReplyReader(ex, [req, req])
    reader.feed(chunked + chunked[:10])
    assert len(reader.outcomes) == 1
    reader.feed(chunked[10:])
    assert reader.ok
    closing = b"HTTP/1.0 200 OK\r\n\r\ndone"
    assert ex.frame(req, closing) is None
    assert ex.frame(req, closing, eof=True) == len(closing)
    assert not ex.keeps_open(req, closing)
    assert ex.check(req, b"HTTP/1.1 500 E\r\nContent-Length: 0\r\n\r\n") is not None


def test_http_garbage_reply_is_unparsable() -> None:
    ex = HTTP()
    reader = ReplyReader(ex, ex.requests(1, random.Random(0)))
    reader.feed(b"\x00\x01 not http\r\n\r\n")
    assert "unparsable reply: not an HTTP response" in (reader.first_problem() or "")


def test_resp_default_cycle_and_expected_replies() -> None:
    ex = RESP()
    reqs = ex.requests(3, random.Random(5))
    assert reqs[0] == encode_command("PING")
    assert reqs[1].startswith(b"*3\r\n$3\r\nSET\r\n")
    key = reqs[2].split(b"\r\n")[4]
    value = b"value-of-" + key
    reply = b"+PONG\r\n+OK\r\n$%d\r\n%s\r\n" % (len(value), value)
    reader = ReplyReader(ex, reqs)
    reader.feed(reply)
    assert reader.ok
    assert ex.check(reqs[0], b"-ERR nope\r\n") is not None


@given(st.recursive(
    st.one_of(
        st.binary(max_size=20).map(lambda b: b"$%d\r\n%s\r\n" % (len(b), b)),
        st.integers().map(lambda i: b":%d\r\n" % i),
        st.just(b"+OK\r\n"),
        st.just(b"$-1\r\n"),
    ),
    lambda inner: st.lists(inner, max_size=4).map(
        lambda xs: b"*%d\r\n" % len(xs) + b"".join(xs)
    ),
    max_leaves=10,
))
def test_resp_length_frames_every_value_exactly(value: bytes) -> None:
    assert resp_length(value + b"+next\r\n") == len(value)
    for cut in range(len(value)):
        assert resp_length(value[:cut]) is None


def test_resp_length_refuses_non_resp() -> None:
    with pytest.raises(ValueError, match="not a RESP reply"):
        resp_length(b"hello\r\n")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size must be an integer >= 1"),
        ({"size": True}, "size must be an integer >= 1"),
        ({"messages": (1,)}, "messages"),
    ],
)
def test_echo_validates_its_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        Echo(**kwargs)  # type: ignore[arg-type]


def test_by_name() -> None:
    assert isinstance(by_name("echo"), Echo)
    assert by_name("exact", send="a", expect="b") == Exact(b"a", b"b")
    assert by_name("redis", send="PING", expect="+PONG\r\n").requests(
        1, random.Random(0)
    ) == [encode_command("PING")]
    with pytest.raises(ValueError, match="choose from"):
        by_name("smtp")
    with pytest.raises(ValueError, match="needs both --send and --expect"):
        by_name("exact", send="a")
    with pytest.raises(ValueError, match="status must be"):
        HTTP(status=99)
