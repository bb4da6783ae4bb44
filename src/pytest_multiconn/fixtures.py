"""Types for annotating the plugin's fixtures in your tests.

A fixture that yields a factory ends in ``_factory`` and is annotated with its Protocol
(``multiconn_server_factory: ServerFactory``, ``multiconn_proxy_factory: ProxyFactory``...);
one that yields a ready object is annotated with its class (``multiconn_server: EchoServer``).

The factories: ``multiconn_server_factory: ServerFactory``,
``multiconn_faulty_server_factory: FaultyServerFactory``,
``multiconn_faulty_client_factory: FaultyClientFactory`` (it returns a ``FaultyClient``: its
``.results`` is set), ``multiconn_proxy_factory: ProxyFactory``,
``multiconn_scripted_server_factory: ScriptedServerFactory``,
``multiconn_udp_proxy_factory: UDPProxyFactory``; and the one runner,
``multiconn_client: ClientRunner`` (it runs the clients and returns their results, no object
to keep).  ``Address`` is what clients and proxies take; ``ServerAddress`` (one of them) is
what ``server.address`` and ``proxy.address`` are: ``(host, port)`` or a Unix socket path
(``.host`` and ``.port`` give the parts, typed).  ``multiconn_toxiproxy: ToxiproxyServer``,
``multiconn_udp_server: UDPEchoServer`` and ``multiconn_closed_port: TCPAddress`` are
re-exported here.  ``tests/typing/user_tests.py`` is such a file, checked with
``mypy --strict``.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.plugin.types import (
    Address,
    ClientRunner,
    FaultyClient,
    FaultyClientFactory,
    FaultyServerFactory,
    ProxyFactory,
    ProxyTarget,
    ScriptedServerFactory,
    ServerAddress,
    ServerFactory,
    TCPAddress,
    ToxiproxyServer,
    UDPEchoServer,
    UDPProxyFactory,
    UDPTarget,
)

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

# Only the names defined by the plugin's types; the classes re-exported for annotations keep
# their own public paths (pytest_multiconn.toxiproxy.ToxiproxyServer, ...).
publish(
    __name__,
    globals(),
    [n for n in __all__ if n not in ("FaultyClient", "ToxiproxyServer", "UDPEchoServer")],
)
