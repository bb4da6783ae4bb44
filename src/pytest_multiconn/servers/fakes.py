"""Ready-made handlers for :class:`~pytest_multiconn.servers.protocol.ProtocolServer`: a line
server, a small HTTP/1.1 server (h11) and a small Redis-protocol server.

They are well-behaved on purpose (pipelining, backpressure, half-close), so the suite passes
them; ``multiconn server --protocol line|http|redis`` runs them from a shell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_multiconn.errors import MissingExtraError
from pytest_multiconn.exchanges.resp import resp_length


class LineProtocol:
    """Answers each ``\\n``-terminated line with ``reply(line)`` (default: the line itself)."""

    def __init__(self, reply: Callable[[bytes], bytes] | None = None, max_line: int = 65536):
        self.reply = reply or (lambda line: line)
        self.max_line = max_line
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        start = 0
        out = bytearray()
        while True:
            end = self.buffer.find(b"\n", start)
            if end < 0:
                break
            out += self.reply(bytes(self.buffer[start:end])) + b"\n"
            start = end + 1
        del self.buffer[:start]
        if out:
            self.transport.write(out)
        if len(self.buffer) > self.max_line:
            self.transport.write(b"ERR line too long\n")
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # answered every complete line already; close once flushed

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class HTTPProtocol:
    """HTTP/1.1 with keep-alive and pipelining, parsed by h11: every request gets
    ``200 OK`` and the body ``handler(method, target, body)`` (default ``b"hello\\n"``)."""

    def __init__(self, handler: Callable[[bytes, bytes, bytes], bytes] | None = None):
        from pytest_multiconn.exchanges.http import _h11

        h11 = _h11()  # a clear error naming the [http] extra when h11 is missing

        self.h11 = h11
        self.conn = h11.Connection(h11.SERVER)
        self.handler = handler or (lambda method, target, body: b"hello\n")
        self.transport: Any = None
        self.request: Any = None
        self.body = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._drain()

    def _drain(self) -> None:
        h11 = self.h11
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self._error()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request, self.body = event, bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._respond()
                if self.conn.our_state is h11.MUST_CLOSE:
                    self.transport.close()
                    return
                self.conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    def _respond(self) -> None:
        h11 = self.h11
        request = self.request
        body = self.handler(bytes(request.method), bytes(request.target), bytes(self.body))
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        out = self.conn.send(h11.Response(status_code=200, headers=headers))
        out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        self.transport.write(out)

    def _error(self) -> None:
        h11 = self.h11
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = b"bad request\n"
            headers = [("Content-Length", str(len(body))), ("Connection", "close")]
            try:
                out = self.conn.send(h11.Response(status_code=400, headers=headers))
                out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(out)
            except h11.LocalProtocolError:
                pass
        self.transport.close()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._drain()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


#: (fewest, most) arguments of each command, the command itself included.
_ARITY = {b"PING": (1, 2), b"ECHO": (2, 2), b"SET": (3, 3), b"GET": (2, 2), b"DEL": (2, 1 << 20)}
#: Output gathered before one write (so a pipeline costs few writes, and flow control acts).
_FLUSH = 16 * 1024
#: Longest inline command (redis-server's own limit is 64 KiB too).
_MAX_INLINE = 65536


class RedisProtocol:
    """PING, ECHO, SET, GET, DEL over RESP (arrays of bulk strings and inline commands);
    one shared ``store`` per server.  Unknown commands get ``-ERR``; bytes that are not RESP
    get ``-ERR Protocol error`` and a close, as redis-server does."""

    def __init__(self, store: dict[bytes, bytes] | None = None):
        self.store = {} if store is None else store
        self.buffer = bytearray()
        self.transport: Any = None
        self.paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        # One command at a time, stopping while the client is not reading: a GET of a big
        # value can answer 22 bytes with megabytes, so pausing the reads alone is not enough.
        out = bytearray()
        while self.buffer and not self.paused:
            args = self._parse()
            if args is None:
                break
            if args is False or args is True:
                out += b"-ERR Protocol error\r\n"
                self.transport.write(out)
                self.transport.close()
                return
            if args:
                out += self._run(args)
            if len(out) >= _FLUSH:
                self.transport.write(out)  # may call pause_writing()
                out = bytearray()
        if out:
            self.transport.write(out)

    def pause_writing(self) -> None:
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.transport.resume_reading()
        self._process()

    def _parse(self) -> list[bytes] | bool | None:
        buf = self.buffer
        if buf[:1] != b"*":
            end = buf.find(b"\r\n")
            if end < 0:
                return None if len(buf) < _MAX_INLINE else False
            line = bytes(buf[:end])
            del buf[: end + 2]
            return line.split()
        try:
            size = resp_length(bytes(buf))
        except ValueError:
            return False
        if size is None:
            return None
        lines = bytes(buf[:size]).split(b"\r\n")
        del buf[:size]
        if any(not lines[i].startswith(b"$") for i in range(1, len(lines) - 1, 2)):
            return False
        return [lines[i] for i in range(2, len(lines) - 1, 2)]

    def _run(self, args: list[bytes]) -> bytes:
        verb = args[0].upper()
        low, high = _ARITY.get(verb, (0, -1))
        if not low <= len(args) <= high:
            return b"-ERR unknown command or wrong arguments '" + verb[:40] + b"'\r\n"
        if verb == b"PING":
            return b"+PONG\r\n" if len(args) == 1 else _bulk(args[1])
        if verb == b"ECHO":
            return _bulk(args[1])
        if verb == b"SET":
            self.store[args[1]] = args[2]
            return b"+OK\r\n"
        if verb == b"GET":
            value = self.store.get(args[1])
            return b"$-1\r\n" if value is None else _bulk(value)
        return b":%d\r\n" % sum(self.store.pop(k, None) is not None for k in args[1:])

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def handler_factory(protocol: str) -> Callable[[], Any]:
    """The handler factory behind ``multiconn server --protocol NAME`` (not echo)."""
    if protocol == "line":
        return LineProtocol
    if protocol == "http":
        # Asked now, at start: a missing h11 would otherwise show only when each connection's
        # handler is made (closing it), and in the test only at teardown.
        from pytest_multiconn.exchanges.http import _h11

        try:
            _h11()
        except MissingExtraError as exc:
            raise MissingExtraError(
                "the HTTP server (protocol='http') needs h11: "
                "pip install 'pytest-multiconn[http]'"
            ) from exc
        return HTTPProtocol
    if protocol == "redis":
        store: dict[bytes, bytes] = {}
        return lambda: RedisProtocol(store)
    raise ValueError(f"no built-in {protocol!r} server; choose from echo, line, http, redis")
