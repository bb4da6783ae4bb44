"""Types for annotating the plugin's fixtures in your tests.

``multiconn_server_factory: ServerFactory``, ``multiconn_client: ClientRunner``,
``multiconn_faulty_client: FaultyClientFactory`` (it returns a ``FaultyClient``: its
``.results`` is set), ``multiconn_proxy: ProxyFactory``,
``multiconn_faulty_server_factory: FaultyServerFactory``,
``multiconn_scripted_server: ScriptedServerFactory``, ``multiconn_udp_proxy: UDPProxyFactory``.
``Address`` is what clients and proxies take; ``ServerAddress`` (one of them) is what
``server.address`` and ``proxy.address`` are: ``(host, port)`` or a Unix socket path
(``.host`` and ``.port`` give the parts, typed).  The fixtures that yield objects are annotated
with their classes (``multiconn_server: EchoServer``, ``multiconn_toxiproxy: ToxiproxyServer``,
``multiconn_udp_server: UDPEchoServer``, ``multiconn_closed_port: TCPAddress``...), the last
three re-exported here.  ``tests/typing/user_tests.py`` is such a file, checked with
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
