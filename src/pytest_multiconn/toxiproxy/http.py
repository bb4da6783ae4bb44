"""Toxiproxy's HTTP API on our selector loop: :class:`ToxiproxyServer`.

HTTP/1.1 framing is h11's (keep-alive, pipelining, chunked bodies); each request is handled
in the server's loop thread as soon as its body is complete, so there is no thread per
request or per connection.  A request is bounded (headers by h11, the body by
``max_body``: 413 beyond it), an idle connection closes after ``idle_timeout``, and a client
that does not read its responses stops being read from (backpressure), like every connection
of ours.  The routes, status codes and JSON shapes are toxiproxy's (``api.go``); the work is
done by :class:`~pytest_multiconn.toxiproxy.api.ToxiproxyAPI`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.checks import check_count
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT
from pytest_multiconn.core.server import ServerBase
from pytest_multiconn.errors import MissingExtraError, ToxiproxyError
from pytest_multiconn.toxiproxy.api import ToxiproxyAPI
from pytest_multiconn.toxiproxy.config import check_config, read_config

try:
    import h11
except ImportError as _exc:  # pragma: no cover - exercised in a child interpreter
    raise MissingExtraError(
        "the toxiproxy server needs h11 for HTTP; install it with "
        "`pip install 'pytest-multiconn[toxiproxy]'`"
    ) from _exc

#: Bound on one request's headers (h11 refuses larger ones with a 431).
MAX_HEADERS = 16 * 1024
#: Bound on one request's body (a populate list of a few hundred proxies fits).
MAX_BODY = 1024 * 1024
#: Bound on how deeply a request body's JSON may nest (toxiproxy's deepest shape, a populate
#: list of proxies, nests three deep): deeper is a 400, never a RecursionError in the loop.
MAX_JSON_DEPTH = 32
#: Idle keep-alive connections close after this many seconds (toxiproxy: 60).
IDLE_TIMEOUT = 60.0

_SERVER_HEADER = b"pytest-multiconn toxiproxy"

Result = tuple[int, Any]  # (status, JSON value or None for no body)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-multiconn")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_body(body: bytes) -> Any:
    if not body.strip():
        # What Go's json decoder says about an empty body.
        raise ToxiproxyError("bad request body: EOF", 400)
    too_deep = ToxiproxyError(
        f"bad request body: JSON nested more than {MAX_JSON_DEPTH} deep (arrays and objects "
        "inside each other); toxiproxy's requests nest at most 3 deep", 400)
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:  # the decoder's own bound, far deeper than ours
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToxiproxyError(f"bad request body: {exc}", 400) from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise too_deep
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True if ``value`` nests lists and dicts more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


def _error(exc: ToxiproxyError) -> Result:
    return exc.status, {"error": exc.message, "status": exc.status}


class Router:
    """Toxiproxy's routes over a :class:`ToxiproxyAPI`: ``(method, path, body) -> (status,
    JSON)``.  Independent of the transport, so the routing is testable on its own."""

    def __init__(self, api: ToxiproxyAPI) -> None:
        self.api = api
        self.version = _version()

    def __call__(self, method: str, target: str, body: bytes) -> tuple[int, Any, list[str]]:
        """``(status, JSON value or None, allowed methods for a 405)``."""
        path = target.split("?", 1)[0]
        parts = [unquote(p) for p in path[1:].split("/")] if path.startswith("/") else []
        handlers = self._handlers(parts)
        if handlers is None:
            return 404, {"error": "404 page not found", "status": 404}, []
        handler = handlers.get(method)
        if handler is None:
            return 405, {"error": "405 method not allowed", "status": 405}, sorted(handlers)
        try:
            status, value = handler(body)
        except ToxiproxyError as exc:
            status, value = _error(exc)
        return status, value, []

    def _handlers(  # noqa: PLR0911 - one return per route: the table reads as api.go's
        self, parts: Sequence[str]
    ) -> dict[str, Callable[[bytes], Result]] | None:
        api = self.api

        def no_content(action: Callable[[], None]) -> Callable[[bytes], Result]:
            def run(body: bytes) -> Result:
                action()
                return 204, None

            return run

        match parts:
            case ["reset"]:
                return {"POST": no_content(api.reset)}
            case ["version"]:
                return {"GET": lambda body: (200, {"version": self.version})}
            case ["proxies"]:
                return {"GET": lambda body: (200, api.proxies()),
                        "POST": lambda body: (201, api.create(_json_body(body)))}
            case ["populate"]:
                return {"POST": self._populate}
            case ["proxies", str(name)] if name:
                def update(body: bytes) -> Result:
                    return 200, api.update(name, _json_body(body))

                return {"GET": lambda body: (200, api.show(name)), "POST": update,
                        "PATCH": update, "DELETE": no_content(lambda: api.delete(name))}
            case ["proxies", str(name), "toxics"] if name:
                return {"GET": lambda body: (200, api.toxics(name)),
                        "POST": lambda body: (200, api.add_toxic(name, _json_body(body)))}
            case ["proxies", str(name), "toxics", str(toxic)] if name and toxic:
                def update_toxic(body: bytes) -> Result:
                    return 200, api.update_toxic(name, toxic, _json_body(body))

                return {"GET": lambda body: (200, api.show_toxic(name, toxic)),
                        "POST": update_toxic, "PATCH": update_toxic,
                        "DELETE": no_content(lambda: api.delete_toxic(name, toxic))}
        return None

    def _populate(self, body: bytes) -> Result:
        try:
            return 201, {"proxies": self.api.populate(_json_body(body))}
        except ToxiproxyError as exc:
            status, value = _error(exc)
            value["proxies"] = exc.populated or None
            return status, value


class _HTTPConnection(Connection):
    """One HTTP/1.1 client of the API: bytes in, h11 events, a response per request."""

    def __init__(self, server: ToxiproxyServer, sock: socket.socket, addr: SocketAddress) -> None:
        super().__init__(server.loop, sock, addr, high_water=server.high_water,
                         low_water=server.low_water, transcript_limit=server.transcript_limit)
        self.server = server
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.closing = False  # we said "Connection: close": discard input until the peer's EOF

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.h11.receive_data(data)
        self._process()

    def on_eof(self) -> None:
        if self.closing:
            self.finish()
            return
        self.h11.receive_data(b"")
        self._process()
        if not self.closed and not self.closing:
            self.finish()

    def pause_writing(self) -> None:
        self.pause_reading()  # a client that does not read its responses is not read from

    def resume_writing(self) -> None:
        self.resume_reading()
        self._process()  # pipelined requests may wait in h11's buffer

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.connection_closed(self)

    def _process(self) -> None:
        while not self.closed and not self.closing and not self.writing_paused:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._start(event)
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > self.server.max_body:
                    self._respond(413, {"error": f"request body larger than "
                                        f"{self.server.max_body} bytes", "status": 413},
                                  close=True)
            elif isinstance(event, h11.EndOfMessage):
                self._handle()
            elif isinstance(event, h11.ConnectionClosed):
                self.finish()
                return

    def _start(self, request: h11.Request) -> None:
        self.request = request
        self.body = bytearray()
        headers = dict(request.headers)
        # toxiproxy refuses browsers: a web page must not drive the proxies (CSRF, DNS
        # rebinding), since the API has no authentication.
        if headers.get(b"user-agent", b"").startswith(b"Mozilla/"):
            self._respond(403, {"error": "User agent not allowed", "status": 403}, close=True)
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            self._respond(413, {"error": f"request body larger than {self.server.max_body} "
                                "bytes", "status": 413}, close=True)
            return
        if self.h11.they_are_waiting_for_100_continue:
            self.write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))

    def _handle(self) -> None:
        request = self.request
        if request is None:  # cannot happen: h11 gives EndOfMessage only after a Request
            return
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("utf-8", "replace")
        try:
            status, value, allowed = self.server.router(method, target, bytes(self.body))
        except Exception as exc:  # noqa: BLE001 - answered with a 500, re-raised by check()
            self.loop.report_error(exc, self)
            status, allowed = 500, []
            value = {"error": f"internal error: {type(exc).__name__}: {exc}", "status": 500}
        on_request = self.server.on_request
        if on_request is not None:
            on_request(method, target, status)
        extra = [(b"Allow", ", ".join(allowed).encode())] if allowed else []
        self._respond(status, value, extra=extra)
        if not self.closed and not self.closing and self.h11.our_state is h11.DONE \
                and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()

    def _respond(self, status: int, value: Any, *, close: bool = False,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b"Server", _SERVER_HEADER), *(extra or [])]
        body = b""
        if value is not None and status != 204:  # noqa: PLR2004 - HTTP 204 has no body
            body = json.dumps(value, separators=(",", ":")).encode()
            headers += [(b"Content-Type", b"application/json"),
                        (b"Content-Length", str(len(body)).encode())]
        elif status != 204:  # noqa: PLR2004
            headers.append((b"Content-Length", b"0"))
        if close:
            headers.append((b"Connection", b"close"))
        try:
            out = self.h11.send(h11.Response(status_code=status, headers=headers))
            if body:
                out += self.h11.send(h11.Data(data=body))
            out += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:  # a response is already under way: just hang up
            self.close(reason="HTTP state error")
            return
        self.write(out)
        if close or self.h11.our_state is h11.MUST_CLOSE:
            self._hang_up()

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            self._respond(status, {"error": f"bad HTTP request: {exc}", "status": status},
                          close=True)
        else:
            self._hang_up()

    def _hang_up(self) -> None:
        # Half-close after the response and read until the peer's EOF: closing with unread
        # input would send an RST that can destroy the response in flight (RFC 2525, 2.17).
        self.closing = True
        self.write_eof()


class ToxiproxyServer(ServerBase):
    """Toxiproxy's HTTP API in-process, on ``host:port`` (default ``127.0.0.1`` and an
    ephemeral port; toxiproxy's own is 8474).

    Use as a context manager, or ``start()`` / ``stop()``.  ``.url`` is the base URL for a
    toxiproxy client, ``.api`` the :class:`ToxiproxyAPI` (callable directly), ``seed`` seeds
    every proxy's random draws, ``config`` is a populate file or list loaded at start.
    Stopping stops every proxy; ``check()`` re-raises errors from any loop thread.
    """

    kind = "toxiproxy"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int | None = None,
        config: str | os.PathLike[str] | list[Any] | None = None,
        allow_remote: bool = False,
        max_body: int = MAX_BODY,
        idle_timeout: float | None = IDLE_TIMEOUT,
        proxy_options: dict[str, Any] | None = None,
        on_request: Callable[[str, str, int], None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
    ) -> None:
        check_count(max_body, "max_body (bytes)")
        super().__init__(host, port, allow_remote=allow_remote, idle_timeout=idle_timeout,
                         name=name)
        options = {"timeout": timeout, **(proxy_options or {})}
        self.api = ToxiproxyAPI(seed=seed, allow_remote=allow_remote, proxy_options=options)
        self.router = Router(self.api)
        self.max_body = max_body
        self.timeout = timeout
        self.on_request = on_request
        if config is None:
            self._config: list[Any] = []
        elif isinstance(config, list):
            check_config(config, "config")
            self._config = config
        else:
            self._config = read_config(config)

    @property
    def seed(self) -> int:
        return self.api.seed

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the base URL a toxiproxy client takes."""
        host, port = self.host, self.port
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> ToxiproxyServer:
        """Populate from ``config``, then serve the API; returns once it accepts."""
        try:
            if self._config:
                self.api.populate(self._config, "config")
            super().start(timeout)
        except BaseException:
            self.api.close()
            raise
        return self

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop serving, then stop every proxy (idempotent)."""
        try:
            super().stop(timeout)
        finally:
            self.api.close()

    def check(self) -> None:
        super().check()
        self.api.check()

    def report(self, limit: int = 16) -> str:
        """This server and one line per proxy (the multiconn report section shows each
        proxy's connections under the proxy itself); ``limit`` bounds the lines."""
        return "\n".join([repr(self), *(f"  {line}" for line in self.api.summary()[:limit])])

    def make_connection(self, sock: socket.socket, addr: SocketAddress) -> Connection:
        return _HTTPConnection(self, sock, addr)


__all__ = ["Router", "ToxiproxyServer"]
