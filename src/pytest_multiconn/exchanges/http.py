"""HTTP/1.1 requests, replies framed by h11 (``pip install pytest-multiconn[http]``).

h11 does all the parsing: a fresh client-side ``h11.Connection`` is told the request was sent,
then fed the received bytes until ``EndOfMessage``; what it did not consume
(``trailing_data``) belongs to the next pipelined reply.  Replies whose end is the close of
the connection (HTTP/1.0 without Content-Length) complete at EOF, as h11 says.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_multiconn.core.checks import check_count
from pytest_multiconn.exchanges.base import Exchange, check_bytes


def _h11() -> Any:
    try:
        import h11
    except ImportError:  # pragma: no cover - the extra is installed in the test environment
        from pytest_multiconn.errors import MissingExtraError

        raise MissingExtraError(
            "the HTTP exchange needs h11: pip install 'pytest-multiconn[http]'"
        ) from None
    return h11


@dataclass(frozen=True)
class _Parsed:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    size: int
    keep_alive: bool
    http_version: bytes


@functools.lru_cache(maxsize=64)
def _parse_cached(
    parse: Callable[[bytes, bool], _Parsed | None], buf: bytes, eof: bool
) -> _Parsed | None:
    # Keyed by the exchange's bound parser: equal exchanges share their parsed replies.
    return parse(buf, eof)


@dataclass(frozen=True)
class HTTP(Exchange):
    """One HTTP/1.1 request (``method target``, ``headers``, ``body``); the reply must have
    status ``status`` and, when ``expect_body`` is given, exactly that body."""

    name: ClassVar[str] = "http"
    # A server answers a request it cannot parse with 400 (and closes), or just closes.
    default_garbage_answers: ClassVar[frozenset[str] | None] = frozenset({"close", "error"})

    method: str = "GET"
    target: str = "/"
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    status: int = 200
    expect_body: bytes | None = None
    host: str = "localhost"

    def __post_init__(self) -> None:
        h11 = _h11()
        if not isinstance(self.method, str) or not self.method.isalpha():
            raise ValueError(f"method must be an HTTP method such as 'GET', got {self.method!r}")
        if not isinstance(self.target, str) or not self.target.startswith(("/", "*", "http")):
            raise ValueError(f"target must be a path such as '/', got {self.target!r}")
        check_count(self.status, "status", minimum=100, maximum=599)  # an HTTP status code
        object.__setattr__(self, "body", check_bytes(self.body, "body", empty=True))
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in self.headers))
        if self.expect_body is not None:
            object.__setattr__(
                self, "expect_body", check_bytes(self.expect_body, "expect_body", empty=True)
            )
        # Serialised once, by h11, which also validates the method, target and headers.
        object.__setattr__(self, "_request", self._serialise(h11))

    def _event(self, h11: Any) -> Any:
        names = {k.lower() for k, _ in self.headers}
        headers = list(self.headers)
        if "host" not in names:
            headers.insert(0, ("Host", self.host))
        if self.body and "content-length" not in names:
            headers.append(("Content-Length", str(len(self.body))))
        return h11.Request(method=self.method, target=self.target, headers=headers)

    def _serialise(self, h11: Any) -> bytes:
        conn = h11.Connection(h11.CLIENT)
        out = conn.send(self._event(h11))
        if self.body:
            out += conn.send(h11.Data(data=self.body))
        out += conn.send(h11.EndOfMessage())
        return bytes(out)

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        request: bytes = self._request  # type: ignore[attr-defined]
        return [request] * check_count(count, "count")

    def parse(self, buf: bytes, eof: bool = False) -> _Parsed | None:
        """The first complete response in ``buf`` (None: incomplete); ValueError if broken."""
        # frame(), check() and keeps_open() parse the same reply: parse it once.
        return _parse_cached(self._parse, bytes(buf), eof)

    def _parse(self, buf: bytes, eof: bool) -> _Parsed | None:
        h11 = _h11()
        conn = h11.Connection(h11.CLIENT)
        conn.send(self._event(h11))
        if self.body:
            conn.send(h11.Data(data=self.body))
        conn.send(h11.EndOfMessage())
        conn.receive_data(bytes(buf))
        if eof:
            conn.receive_data(b"")
        status = 0
        headers: tuple[tuple[bytes, bytes], ...] = ()
        version = b""
        body = bytearray()
        for _ in range(len(buf) + 8):  # every event consumes bytes, or ends the loop
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ValueError(f"not an HTTP response: {exc}") from None
            if event is h11.NEED_DATA:
                if eof:
                    raise ValueError("the server closed in the middle of a response")
                return None
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status, version = event.status_code, bytes(event.http_version)
                headers = tuple((bytes(k), bytes(v)) for k, v in event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                rest, _closed = conn.trailing_data
                return _Parsed(
                    status,
                    headers,
                    bytes(body),
                    len(buf) - len(rest),
                    conn.their_state is h11.DONE and conn.our_state is h11.DONE,
                    version,
                )
            elif isinstance(event, h11.ConnectionClosed):
                raise ValueError("the server closed before a response")
        raise ValueError("h11 made no progress")  # pragma: no cover - a bound, not a path

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        parsed = self.parse(buf, eof)
        return None if parsed is None else parsed.size

    def early_problem(self, request: bytes, partial: bytes) -> str | None:
        """A final status line other than ``status`` is wrong whatever follows."""
        end = partial.find(b"\r\n")
        if end < 0:
            return None
        version, _, rest = partial[:end].partition(b" ")
        code = rest.split(b" ", 1)[0]
        if not version.startswith(b"HTTP/") or not code.isdigit():
            return None  # not a status line: frame() will say it is broken
        status = int(code)
        if status < 200 or status == self.status:  # noqa: PLR2004 - 1xx come before the final
            return None
        return f"status {status}, expected {self.status} ({partial[:end][:80]!r})"

    def check(self, request: bytes, reply: bytes) -> str | None:
        parsed = self.parse(reply, eof=True)
        if parsed is None:  # pragma: no cover - frame() already found the end
            return "incomplete response"
        if parsed.status != self.status:
            line = reply.split(b"\r\n", 1)[0]
            return f"status {parsed.status}, expected {self.status} ({line[:80]!r})"
        if self.expect_body is not None and parsed.body != self.expect_body:
            from pytest_multiconn.exchanges.base import describe_difference

            return "body differs: " + describe_difference(self.expect_body, parsed.body)
        return None

    def keeps_open(self, request: bytes, reply: bytes) -> bool:
        try:
            parsed = self.parse(reply, eof=False)
        except ValueError:
            return False
        return parsed is not None and parsed.keep_alive

    def is_error_reply(self, reply: bytes) -> bool:
        # A 4xx/5xx status; or a bare body without a status line, which is how servers answer
        # a request line without a version (HTTP/0.9 style), such as garbage.
        if reply.startswith(b"HTTP/"):
            return reply[9:10] in (b"4", b"5")
        return True
