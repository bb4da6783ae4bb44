"""TLS for every server, client and fault, with throw-away certificates from trustme.

``EchoServer(tls=True)`` serves TLS with a fresh CA; ``server.client_tls`` is an
``ssl.SSLContext`` that trusts it.  :class:`TLSConfig` holds a CA and the contexts built on it;
:class:`TLSLayer` is the layer a TLS connection runs over (``conn.layer``); the TLS faults live
in :mod:`pytest_multiconn.faults`.
"""

from __future__ import annotations

import warnings
from typing import Any

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


def _tls_connection_class(base: type[Any]) -> type[Any]:
    """Deprecated: any connection class runs over TLS when its server or client has ``tls=``."""
    return base


#: Names of 0.1.0 that the layer replaced: importable for one release, with a warning.
_DEPRECATED: dict[str, tuple[Any, str]] = {
    "TLSConnectionMixin": (
        TLSLayer,
        "pytest_multiconn.tls.TLSConnectionMixin is gone: TLS is a layer under any connection, "
        "pytest_multiconn.tls.TLSLayer (conn.layer); this alias goes away in the next release",
    ),
    "tls_connection_class": (
        _tls_connection_class,
        "pytest_multiconn.tls.tls_connection_class is not needed any more: every connection "
        "class runs over TLS when the server or client has tls= (it gets a "
        "pytest_multiconn.tls.TLSLayer); it returns its argument and goes away in the next "
        "release",
    ),
}


def __getattr__(name: str) -> Any:
    entry = _DEPRECATED.get(name)
    if entry is None:
        raise AttributeError(f"module 'pytest_multiconn.tls' has no attribute {name!r}")
    warnings.warn(entry[1], DeprecationWarning, stacklevel=2)
    return entry[0]
