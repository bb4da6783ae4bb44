"""What the server fixtures share: the marker's keywords, the factory that starts servers for
one test and stops them at its teardown, and that teardown (:func:`stop_all`).

Imported by the fixtures when they first run, not when pytest starts: every pytest start
imports the plugin, and under ``PYTHONDONTWRITEBYTECODE=1`` pytest parses and rewrites each
byte of plugin source it imports at start (issue 25).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

from pytest_multiconn.plugin.nodeid import base_nodeid
from pytest_multiconn.plugin.options import SERVER_MARKER

if TYPE_CHECKING:
    from pytest_multiconn.core.shared import SharedLoop
    from pytest_multiconn.servers.echo import EchoServer

T = TypeVar("T")


def keywords_of(cls: type) -> set[str]:
    """The keyword parameters ``cls(...)`` accepts, following ``**kwargs`` up the MRO."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(
            p.name
            for p in params
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def server_marker_kwargs(
    item: pytest.Item, cls: type | None = None, extra: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The keyword arguments of ``item``'s closest ``@pytest.mark.multiconn_server(...)``,
    checked against ``cls``'s constructor (``EchoServer``'s by default; and ``extra``) so
    that a typo names the marker and the known keys."""
    marker = item.get_closest_marker(SERVER_MARKER)
    if marker is None:
        return {}
    if cls is None:
        from pytest_multiconn.servers.echo import EchoServer

        cls = EchoServer
    known = keywords_of(cls) | extra
    unknown = sorted(set(marker.kwargs) - known)
    if marker.args or unknown:
        what = (
            f"unknown keyword(s) {', '.join(map(repr, unknown))}"
            if unknown
            else f"positional arguments {marker.args!r} (only keywords are taken)"
        )
        pytest.fail(
            f"@pytest.mark.{SERVER_MARKER}(...) on {base_nodeid(item)}: {what}; "
            f"the known keywords are {', '.join(sorted(known))}",
            pytrace=False,
        )
    return dict(marker.kwargs)


class EchoServerFactory:
    """Starts servers for one test and stops them all at teardown (implements
    :class:`~pytest_multiconn.fixtures.ServerFactory`)."""

    def __init__(
        self, timeout: float, name_hint: str = "", shared_loop: SharedLoop | None = None
    ) -> None:
        self.timeout = timeout
        self.name_hint = name_hint
        #: The worker's loop thread that the echo servers made here run on (None: one each).
        self.shared_loop = shared_loop
        self.servers: list[Stoppable] = []

    def __repr__(self) -> str:
        return f"<EchoServerFactory timeout={self.timeout} servers={len(self.servers)}>"

    def __call__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> EchoServer:
        from pytest_multiconn.servers.echo import EchoServer

        if self.shared_loop is not None:
            kwargs.setdefault("loop", self.shared_loop)
        kwargs.setdefault("timeout", self.timeout)
        return self.adopt(EchoServer(host, port, **kwargs))

    def adopt(self, server: T) -> T:
        """Start ``server`` and stop it at teardown (newest first); returns it.

        What it takes (anything else is a TypeError naming this):

        * one of ours (a server, proxy, UDP server, ``ServerProcess``): started with the
          fixture's timeout unless it runs already, stopped with it, and its loop-thread
          errors re-raised at teardown;
        * any object with ``start()`` and ``stop()`` methods: ``start()`` is called now and
          ``stop()`` at teardown, both without arguments;
        * a context manager: entered now (as ``with`` would), exited at teardown with no
          exception.

        A ``start()`` or ``__enter__`` that raises leaves nothing to stop.
        """
        import inspect

        from pytest_multiconn.core.lifecycle import LoopService, StartStop

        if isinstance(server, StartStop):
            # Each of ours takes stop(timeout); a loop service's start takes one too.
            ours: Any = server
            self.servers.append(ours)
            if server.needs_start():
                if isinstance(server, LoopService):
                    ours.start(self.timeout)
                else:
                    ours.start()
            return server
        start, stop = getattr(server, "start", None), getattr(server, "stop", None)
        if callable(start) and callable(stop):
            started = start()
            if inspect.isawaitable(started):
                if inspect.iscoroutine(started):
                    started.close()
                raise TypeError(
                    f"adopt() calls start() without awaiting it, and {type(server).__name__}"
                    ".start() is a coroutine function: start and stop an async server in your "
                    "async test (or fixture) instead"
                )
            self.servers.append(_Adopted(server, stop, f"{type(server).__name__}.stop()"))
            return server
        enter, leave = getattr(server, "__enter__", None), getattr(server, "__exit__", None)
        if callable(enter) and callable(leave):
            enter()
            self.servers.append(
                _Adopted(server, lambda: leave(None, None, None), f"{type(server).__name__}"
                         ".__exit__()")
            )
            return server
        raise TypeError(
            "multiconn_server_factory.adopt() takes one of our servers, an object with "
            "start() and stop() methods (called without arguments), or a context manager "
            f"(with __enter__ and __exit__); got {server!r} of type {type(server).__name__}"
        )

    def close(self) -> None:
        """Stop every server (newest first), then re-raise the first loop error."""
        stop_all(self.servers, self.timeout)


class Stoppable(Protocol):
    """What a fixture's teardown asks of a server it started (stream or UDP, or a proxy)."""

    def stop(self, timeout: float) -> object: ...

    def check(self) -> None: ...


class _Adopted:
    """A server that is not ours, as teardown sees it: ``stop`` is its own ``stop()`` (or
    ``__exit__``), called without arguments; there are no loop errors to check."""

    def __init__(self, server: object, stop: Callable[[], object], what: str) -> None:
        self.server = server
        self._stop = stop
        self.what = what

    def __repr__(self) -> str:
        return f"<adopted {self.server!r}: {self.what} at teardown>"

    def stop(self, timeout: float) -> object:
        return self._stop()

    def check(self) -> None:
        pass


def stop_all(servers: Sequence[Stoppable], timeout: float) -> None:
    """Stop every server (newest first), then re-raise the first error: a stop's, else the
    first loop-thread error ``check()`` finds (every server is stopped and checked first)."""
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.stop(timeout)
        except BaseException as exc:  # noqa: BLE001 - every server is stopped before raising
            errors.append(exc)
    for server in servers:
        try:
            server.check()
        except BaseException as exc:  # noqa: BLE001 - raised below, first one wins
            errors.append(exc)
    if errors:
        raise errors[0]
