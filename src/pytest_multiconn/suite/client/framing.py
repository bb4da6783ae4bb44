"""Requests and replies cut out of a connection's byte stream, by the exchange's rules.

The client suite watches the bytes a client sends (upstream) and the bytes it is sent
(downstream) at its proxy.  An :class:`~pytest_multiconn.exchanges.Exchange` frames replies
already; requests are framed here, one rule per exchange (a RESP array or inline line, an HTTP
message by its head and ``Content-Length`` or chunks, a line, a length prefix, the fixed bytes
of ``Exact``/``Framed``), so the suite can count how many times one request reached the server.
"""

from __future__ import annotations

import re

from pytest_multiconn.exchanges import (
    Exact,
    Exchange,
    Framed,
    LengthPrefixed,
    Lines,
    resp_length,
)
from pytest_multiconn.exchanges.resp import RESP

_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]+)[^\r\n]*\r\n")


def _http_request(buf: bytes) -> int | None:
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    at = head_end + 4
    head = buf[:head_end].lower()
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if length is not None:
        end = at + int(length.group(1))
        return end if len(buf) >= end else None
    if re.search(rb"\r\ntransfer-encoding:[^\r\n]*chunked", head):
        while True:
            m = _CHUNK_SIZE.match(buf, at)
            if m is None:
                return None
            size = int(m.group(1), 16)
            at = m.end()
            if size == 0:
                trailer = buf.find(b"\r\n", at)
                while trailer > at:  # trailer fields, then the blank line
                    at = trailer + 2
                    trailer = buf.find(b"\r\n", at)
                return trailer + 2 if trailer >= 0 else None
            at += size + 2
            if len(buf) < at:
                return None
    return at


def _resp_request(buf: bytes) -> int | None:
    if buf[:1] == b"*":
        return resp_length(buf)
    end = buf.find(b"\n")
    return None if end < 0 else end + 1


def request_length(  # noqa: PLR0911 - one return per exchange
    exchange: Exchange, buf: bytes
) -> int | None:
    """How many bytes at the start of ``buf`` make one request of ``exchange`` (None: more
    are needed); ValueError when they cannot be a request of it."""
    if not buf:
        return None
    if isinstance(exchange, RESP):
        return _resp_request(buf)
    if exchange.name == "http":
        return _http_request(buf)
    if isinstance(exchange, Lines):
        end = buf.find(exchange.delimiter)
        return None if end < 0 else end + len(exchange.delimiter)
    if isinstance(exchange, LengthPrefixed):
        return exchange.frame(b"", buf)
    if isinstance(exchange, Exact | Framed):
        send = exchange.send
        if buf.startswith(send):
            return len(send)
        if send.startswith(buf):
            return None
        nxt = buf.find(send, 1)
        return nxt if nxt > 0 else len(buf)  # bytes that are not the request: one piece
    return len(buf)  # echo and unknown exchanges: every chunk the client sent


def split_requests(exchange: Exchange, stream: bytes) -> tuple[list[bytes], bytes]:
    """The complete requests in ``stream``, and what is left (a partial request)."""
    out: list[bytes] = []
    at = 0
    while at < len(stream):
        try:
            size = request_length(exchange, stream[at:])
        except ValueError:
            size = len(stream) - at
        if size is None or size <= 0:
            break
        out.append(stream[at : at + size])
        at += size
    return out, stream[at:]


def split_replies(exchange: Exchange, stream: bytes, request: bytes = b"") -> list[tuple[int, int]]:
    """``(offset, length)`` of each complete reply in ``stream`` (framed by ``exchange``)."""
    out: list[tuple[int, int]] = []
    at = 0
    while at < len(stream):
        try:
            size = exchange.frame(request, stream[at:], False)
        except ValueError:
            break
        if size is None or size <= 0:
            break
        out.append((at, size))
        at += size
    return out


def request_key(exchange: Exchange, request: bytes) -> bytes:
    """What makes two requests "the same request" (a re-send): the bytes, except for HTTP,
    whose request line and body count (a client may change a header on a retry)."""
    if exchange.name == "http":
        line = request.split(b"\r\n", 1)[0]
        head_end = request.find(b"\r\n\r\n")
        body = request[head_end + 4 :] if head_end >= 0 else b""
        return line + b"\n" + body
    return request


def garbage_for(exchange: Exchange, size: int) -> bytes:
    """Bytes that are not a reply of ``exchange`` at all (as long as ``size`` when it can)."""
    if isinstance(exchange, RESP):
        return b"@garbage \x00\xff not RESP\r\n"
    if exchange.name == "http":
        return b"garbage \x00\xff not HTTP\r\n\r\n"
    if isinstance(exchange, Lines):
        return b"\x00\xff garbage" + exchange.delimiter
    return bytes((0xFF - i) & 0xFF for i in range(max(size, 1)))


__all__ = ["garbage_for", "request_key", "request_length", "split_replies", "split_requests"]
