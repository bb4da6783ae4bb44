"""The server the client suite runs when it is given no ``target``: one of ours that answers
the exchange's requests with the exchange's replies.

HTTP is served by :class:`~pytest_multiconn.servers.HTTPProtocol` (its body: the exchange's
``expect_body``); RESP without fixed commands by :class:`~pytest_multiconn.servers.RedisProtocol`
(PING, ECHO, SET, GET, DEL); every other exchange by :class:`ExchangeProtocol`, which frames
each request and answers ``exchange.expected(request)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_multiconn.exchanges import Exchange, Lines
from pytest_multiconn.exchanges.resp import RESP
from pytest_multiconn.servers import HTTPProtocol, LineProtocol, ProtocolServer, RedisProtocol
from pytest_multiconn.suite.client.framing import request_length


class ExchangeProtocol:
    """Answers each request of ``exchange`` with ``exchange.expected(request)``; a request it
    cannot answer closes the connection."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = bytearray()
        while self.buffer:
            try:
                size = request_length(self.exchange, self.buffer)
            except ValueError:
                size = -1
            if size is None:
                break
            request, self.buffer = self.buffer[: max(size, 0)], self.buffer[max(size, 0) :]
            reply = self.exchange.expected(request) if size > 0 else None
            if reply is None:
                self.transport.write(bytes(out))
                self.transport.close()
                return
            out += reply
        if out:
            self.transport.write(bytes(out))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def handler_for(exchange: Exchange) -> Callable[[], Any]:
    """The handler factory of the server that answers ``exchange``."""
    if exchange.name == "http":
        body = getattr(exchange, "expect_body", None)
        reply = b"hello\n" if body is None else body
        return lambda: HTTPProtocol(lambda method, target, data: reply)
    if isinstance(exchange, RESP) and not exchange.replies:
        store: dict[bytes, bytes] = {}
        return lambda: RedisProtocol(store)
    if isinstance(exchange, Lines) and exchange.terminator is None and exchange.expect is None:
        return lambda: LineProtocol(exchange.reply)
    return lambda: ExchangeProtocol(exchange)


def serve(exchange: Exchange) -> ProtocolServer:
    """A started server of ours answering ``exchange`` (stop it when done)."""
    server = ProtocolServer(handler_for(exchange))
    server.start()
    return server


__all__ = ["ExchangeProtocol", "handler_for", "serve"]
