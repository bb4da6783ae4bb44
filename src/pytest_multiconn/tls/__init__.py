"""TLS for every server, client and fault, with throw-away certificates from trustme.

``EchoServer(tls=True)`` serves TLS with a fresh CA; ``server.client_tls`` is an
``ssl.SSLContext`` that trusts it.  :class:`TLSConfig` holds a CA and the contexts built on it;
:class:`TLSLayer` is the layer a TLS connection runs over (``conn.layer``); the TLS faults live
in :mod:`pytest_multiconn.faults`.
"""

from __future__ import annotations

from pytest_multiconn.core.public import publish
from pytest_multiconn.errors import TLSError
from pytest_multiconn.tls.certs import (
    DEFAULT_HOSTS,
    client_context,
    issue_cert,
    make_tls_pair,
    new_ca,
    server_context,
    write_ca_cert,
)
from pytest_multiconn.tls.config import ClientTLS, ServerTLS, TLSConfig
from pytest_multiconn.tls.stream import TLSLayer

__all__ = [
    "DEFAULT_HOSTS",
    "ClientTLS",
    "ServerTLS",
    "TLSConfig",
    "TLSError",
    "TLSLayer",
    "client_context",
    "issue_cert",
    "make_tls_pair",
    "new_ca",
    "server_context",
    "write_ca_cert",
]

publish(__name__, globals(), __all__)

