"""Types for annotating the plugin's fixtures in your tests.

``multiconn_server_factory: ServerFactory``, ``multiconn_client: ClientRunner``,
``multiconn_faulty_client: FaultyClientFactory``, ``multiconn_proxy: ProxyFactory``,
``multiconn_faulty_server_factory: FaultyServerFactory``; ``Address`` is what ``server.address``
is and what clients and proxies take.  The fixtures that yield objects are annotated with
their classes (``multiconn_server: EchoServer``, ``multiconn_closed_port: TCPAddress``...).
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.plugin.types import (
    Address,
    ClientRunner,
    FaultyClientFactory,
    FaultyServerFactory,
    ProxyFactory,
    ProxyTarget,
    ServerFactory,
    TCPAddress,
)

__all__ = [
    "Address",
    "ClientRunner",
    "FaultyClientFactory",
    "FaultyServerFactory",
    "ProxyFactory",
    "ProxyTarget",
    "ServerFactory",
    "TCPAddress",
]

publish(__name__, globals(), __all__)
