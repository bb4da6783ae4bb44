"""pytest-multiconn: make sockets misbehave on demand, in your own tests.

The top level holds the everyday names (a server, a client, the proxy, TLS, the errors); the
rest lives in namespaces, each for one job:

* :mod:`pytest_multiconn.faults`: every fault (client, stream, TLS), to break connections;
* :mod:`pytest_multiconn.servers`: protocol servers, fakes and a scripted peer, to test clients;
* :mod:`pytest_multiconn.client`: the multi-connection client and its results;
* :mod:`pytest_multiconn.exchanges`: what a client sends and expects (lines, HTTP, RESP...);
* :mod:`pytest_multiconn.proxy`: the fault-injecting proxy, between a client and a server;
* :mod:`pytest_multiconn.tls`: throw-away certificates and TLS configuration;
* :mod:`pytest_multiconn.suite`: the fault-injection suite for your own server or client;
* :mod:`pytest_multiconn.udp`: datagram echo server, fault proxy and client;
* :mod:`pytest_multiconn.toxiproxy`: a drop-in toxiproxy server;
* :mod:`pytest_multiconn.fixtures`: the fixtures' types, for annotating tests;
* :mod:`pytest_multiconn.strategies`: Hypothesis strategies of faults and schedules;
* :mod:`pytest_multiconn.lowlevel`: the loop, connection and server base, for extending.

Subpackages not listed there (``core``, ``plugin``, ``cli``) are internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_multiconn.core.public import lazy_import, publish
from pytest_multiconn.errors import (
    AddressError,
    AddressInUseError,
    ContractBreak,
    EchoMismatch,
    LeakError,
    LoopStuckError,
    LoopThreadError,
    MulticonnError,
    RemoteBindError,
    ReplyMismatch,
    ServerProcessError,
    TLSError,
    WaitTimeout,
)

if TYPE_CHECKING:
    from pytest_multiconn.client.multiconn import (
        ClientResults,
        MultiConnClient,
        run_clients,
    )
    from pytest_multiconn.core.process import ServerProcess
    from pytest_multiconn.proxy.proxy import FaultProxy
    from pytest_multiconn.servers.echo import EchoServer
    from pytest_multiconn.tls.config import TLSConfig

    __version__: str

#: The top-level names that are imported on first use (``pytest_multiconn.EchoServer``), so
#: that ``import pytest_multiconn`` (which every ``import pytest_multiconn.x`` runs first, the
#: pytest plugin's included) does not import servers, faults, the proxy and TLS: the module
#: that defines each.  ``__getattr__`` imports it and publishes the name here (issue 25).
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ["ClientResults", "MultiConnClient", "run_clients"], "pytest_multiconn.client.multiconn"
    ),
    "ServerProcess": "pytest_multiconn.core.process",
    "FaultProxy": "pytest_multiconn.proxy.proxy",
    "EchoServer": "pytest_multiconn.servers.echo",
    "TLSConfig": "pytest_multiconn.tls.config",
}  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-multiconn")
    except PackageNotFoundError:  # pragma: no cover - a tree that was never installed
        return "0.0.0+unknown"


__all__ = [
    "AddressError",
    "AddressInUseError",
    "ClientResults",
    "ContractBreak",
    "EchoMismatch",
    "EchoServer",
    "FaultProxy",
    "LeakError",
    "LoopStuckError",
    "LoopThreadError",
    "MultiConnClient",
    "MulticonnError",
    "RemoteBindError",
    "ReplyMismatch",
    "ServerProcess",
    "ServerProcessError",
    "TLSConfig",
    "TLSError",
    "WaitTimeout",
    "__version__",
    "run_clients",
]

publish(__name__, globals(), [n for n in __all__ if n != "__version__" and n not in _LAZY])


_lazy_getattr = lazy_import(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
