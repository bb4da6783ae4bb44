"""TLS for every server, client and proxy, with throw-away certificates from trustme.

``EchoServer(tls=True)`` serves TLS with a fresh CA; ``server.client_tls`` is an
``ssl.SSLContext`` that trusts it.  :class:`TLSConfig` holds a CA and the contexts built on it;
the TLS faults live in :mod:`pytest_multiconn.faults`.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.errors import TLSError
from pytest_multiconn.tls.layer import (
    DEFAULT_HOSTS,
    TLSConfig,
    TLSConnectionMixin,
    client_context,
    issue_cert,
    make_tls_pair,
    new_ca,
    server_context,
    tls_connection_class,
    write_ca_cert,
)

__all__ = [
    "DEFAULT_HOSTS",
    "TLSConfig",
    "TLSConnectionMixin",
    "TLSError",
    "client_context",
    "issue_cert",
    "make_tls_pair",
    "new_ca",
    "server_context",
    "tls_connection_class",
    "write_ca_cert",
]

publish(__name__, globals(), __all__)
