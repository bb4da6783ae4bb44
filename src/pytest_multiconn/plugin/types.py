"""The types of the plugin's factory fixtures, for annotating tests.

Public as :mod:`pytest_multiconn.fixtures`::

    from pytest_multiconn.fixtures import ClientRunner, ProxyFactory

    def test_through_proxy(multiconn_server, multiconn_proxy_factory: ProxyFactory,
                           multiconn_client: ClientRunner) -> None:
        proxy = multiconn_proxy_factory(multiconn_server)
        multiconn_client(proxy.address, 3, [b"ping"]).check()

They are Protocols: narrow descriptions of what a test may call, not the classes behind the
fixtures.  Positional parameters are the constructors' (``address, num_connections,
messages`` as in :class:`~pytest_multiconn.MultiConnClient`); everything else is keyword-only
and goes to the constructor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pytest_multiconn.client.multiconn import DEFAULT_MESSAGES, ClientResults, MultiConnClient
from pytest_multiconn.core.address import Address, ServerAddress, TCPAddress
from pytest_multiconn.faults.client import ClientFault
from pytest_multiconn.faults.toxics import Toxic
from pytest_multiconn.proxy.proxy import FaultProxy, ProxyTarget
from pytest_multiconn.servers.echo import EchoServer
from pytest_multiconn.servers.protocol import HandlerFactory, ProtocolServer
from pytest_multiconn.servers.scripted import ScriptedServer, Step
from pytest_multiconn.toxiproxy.http import ToxiproxyServer
from pytest_multiconn.udp import UDPEchoServer, UDPFaultProxy
from pytest_multiconn.udp.endpoint import UDPTarget

if TYPE_CHECKING:

    class FaultyClient(MultiConnClient):
        """What ``multiconn_faulty_client_factory(...)`` returns: the :class:`MultiConnClient` after
        its exchanges, so ``.results`` is set (not ``None``)."""

        results: ClientResults

else:
    #: What ``multiconn_faulty_client_factory(...)`` returns: the :class:`MultiConnClient` after its
    #: exchanges; to a type checker its ``.results`` is ``ClientResults`` (never ``None``).
    FaultyClient = MultiConnClient

T = TypeVar("T")


class ServerFactory(Protocol):
    """``multiconn_server_factory``: start servers that are stopped at teardown."""

    def __call__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> EchoServer:
        """Start an :class:`~pytest_multiconn.EchoServer` (``kwargs`` are its options)."""
        ...

    def adopt(self, server: T) -> T:
        """Start ``server`` and stop it at teardown; return it.  One of ours (started unless
        it runs already), any object with ``start()``/``stop()`` (called without
        arguments), or a context manager (entered now, exited at teardown); anything else
        is a TypeError."""
        ...


class ClientRunner(Protocol):
    """``multiconn_client``: run a :class:`~pytest_multiconn.MultiConnClient` to completion."""

    def __call__(
        self,
        address: Address,
        num_connections: int = 2,
        messages: Iterable[bytes] = DEFAULT_MESSAGES,
        **kwargs: Any,
    ) -> ClientResults:
        """One result per connection; ``kwargs`` are ``MultiConnClient``'s options."""
        ...


class FaultyClientFactory(Protocol):
    """``multiconn_faulty_client_factory``: run a client with faults; its connections stay open
    (``keep_open=True``) until teardown."""

    def __call__(
        self,
        address: Address,
        num_connections: int = 2,
        messages: Iterable[bytes] = DEFAULT_MESSAGES,
        *,
        faults: Iterable[ClientFault] = (),
        **kwargs: Any,
    ) -> FaultyClient:
        """The client after its exchanges (``.results``, set; ``.lingering``)."""
        ...


class ProxyFactory(Protocol):
    """``multiconn_proxy_factory``: start a :class:`~pytest_multiconn.FaultProxy` in front of
    a target."""

    def __call__(
        self, target: ProxyTarget, listen: Address = ("127.0.0.1", 0), **kwargs: Any
    ) -> FaultProxy:
        """The started proxy; ``kwargs`` are ``FaultProxy``'s options (``seed``, ``hold``...)."""
        ...


class FaultyServerFactory(Protocol):
    """``multiconn_faulty_server_factory``: start a server with faults."""

    def __call__(
        self,
        *faults: Toxic,
        seed: int | None = None,
        protocol: HandlerFactory | None = None,
        **kwargs: Any,
    ) -> ProtocolServer:
        """The started server (an ``EchoServer``, or a ``ProtocolServer`` for ``protocol``);
        ``kwargs`` are its options."""
        ...


class ScriptedServerFactory(Protocol):
    """``multiconn_scripted_server_factory``: start a
    :class:`~pytest_multiconn.servers.ScriptedServer`."""

    def __call__(self, script: Sequence[Step] | None = None, **kwargs: Any) -> ScriptedServer:
        """The started server; ``kwargs`` are ``ScriptedServer``'s options (``scripts=[...]``,
        ``cycle``, ``tls``, ``optional``...)."""
        ...


class UDPProxyFactory(Protocol):
    """``multiconn_udp_proxy_factory``: start a :class:`~pytest_multiconn.udp.UDPFaultProxy`."""

    def __call__(self, target: UDPTarget, **kwargs: Any) -> UDPFaultProxy:
        """The started proxy; ``kwargs`` are ``UDPFaultProxy``'s options (``seed``,
        ``idle_timeout``, ``max_sessions``...)."""
        ...


__all__ = [
    "Address",
    "ClientRunner",
    "FaultyClient",
    "FaultyClientFactory",
    "FaultyServerFactory",
    "ProxyFactory",
    "ProxyTarget",
    "ScriptedServerFactory",
    "ServerAddress",
    "ServerFactory",
    "TCPAddress",
    "ToxiproxyServer",
    "UDPEchoServer",
    "UDPProxyFactory",
    "UDPTarget",
]
