"""TLS configuration: :class:`TLSConfig` (a CA and the contexts built on it), and the
per-server (:class:`ServerTLS`) and per-client (:class:`ClientTLS`) TLS that put a
:class:`~pytest_multiconn.tls.stream.TLSLayer` under each connection.

``ServerTLS`` and ``ClientTLS`` implement core's
:class:`~pytest_multiconn.core.layer.LayerFactory`: a server or client asks them for one layer
per connection and knows nothing else about TLS.
"""

from __future__ import annotations

import os
import ssl
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import trustme

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.checks import check_instance, check_items, check_seconds
from pytest_multiconn.core.layer import LayerHost
from pytest_multiconn.tls.certs import (
    DEFAULT_HOSTS,
    client_context,
    new_ca,
    server_context,
    write_ca_cert,
)
from pytest_multiconn.tls.stream import TLSLayer

#: Seconds a peer has to complete the TLS handshake before the connection is closed.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class ServerCertificate(Protocol):
    """What ``TLSConfig(cert_fault=...)`` asks of a certificate fault (faults.tls.CertFault)."""

    def context(self, ca: trustme.CA, hosts: Sequence[str]) -> ssl.SSLContext:
        """The server context that presents the (bad) certificate."""
        ...


class TLSConfig:
    """Everything TLS about one test setup: a CA, the server's certificate, mutual TLS.

    ``server_context`` and ``client_context`` are built once, on first use, and can be shared
    by any number of servers and clients.  ``cert_fault`` swaps the server certificate for a
    bad one (:class:`WrongHostCert`, :class:`ExpiredCert`, :class:`UntrustedCert`) while the
    client context stays correct, so the client is the one that must refuse it.
    """

    def __init__(
        self,
        ca: trustme.CA | None = None,
        *,
        hosts: Iterable[str] = DEFAULT_HOSTS,
        require_client_cert: bool = False,
        client_cert: bool | None = None,
        cert_fault: ServerCertificate | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        handshake_timeout = check_seconds(handshake_timeout, "handshake_timeout")
        if ca is not None:
            check_instance(ca, "ca", trustme.CA, "a trustme.CA (or None for a new one)")
        if cert_fault is not None and not callable(getattr(cert_fault, "context", None)):
            raise TypeError(
                "cert_fault must be a certificate fault (pytest_multiconn.faults: WrongHostCert,"
                f" ExpiredCert, UntrustedCert) or None, got {cert_fault!r}"
            )
        self.ca = ca if ca is not None else new_ca()
        self.hosts = check_items(hosts, "hosts", str, "str (host names or IP addresses)")
        self.require_client_cert = require_client_cert
        self.client_cert = require_client_cert if client_cert is None else client_cert
        self.cert_fault = cert_fault
        self.handshake_timeout = handshake_timeout
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        extras = ""
        if self.require_client_cert:
            extras += " mutual"
        if self.cert_fault is not None:
            extras += f" cert_fault={self.cert_fault!r}"
        return f"<TLSConfig hosts={','.join(self.hosts)}{extras}>"

    def replace(self, **changes: Any) -> TLSConfig:
        """A copy with the same CA and some options changed (contexts are rebuilt)."""
        options: dict[str, Any] = {
            "hosts": self.hosts,
            "require_client_cert": self.require_client_cert,
            "client_cert": self.client_cert,
            "cert_fault": self.cert_fault,
            "handshake_timeout": self.handshake_timeout,
        }
        if "require_client_cert" in changes and "client_cert" not in changes:
            options["client_cert"] = None
        options.update(changes)
        return TLSConfig(self.ca, **options)

    @property
    def server_context(self) -> ssl.SSLContext:
        if self._server is None:
            if self.cert_fault is not None:
                ctx = self.cert_fault.context(self.ca, self.hosts)
                if self.require_client_cert:
                    ctx.verify_mode = ssl.CERT_REQUIRED
                    self.ca.configure_trust(ctx)
            else:
                ctx = server_context(
                    self.ca, self.hosts, require_client_cert=self.require_client_cert
                )
            self._server = ctx
        return self._server

    @property
    def client_context(self) -> ssl.SSLContext:
        if self._client is None:
            self._client = client_context(self.ca, cert=self.client_cert)
        return self._client

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM (what a client we did not write needs: ``-CAfile``)."""
        return self.ca.cert_pem.bytes()

    def write_ca_cert(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write the CA certificate as PEM; return its path (see :func:`write_ca_cert`)."""
        return write_ca_cert(self.ca, directory)


# -- per-server and per-client TLS state ----------------------------------------------------------


class ServerTLS:
    """One server's TLS: its context, handshake timeout and counters (loop thread only)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        client_context: ssl.SSLContext | None = None,
        config: TLSConfig | None = None,
    ) -> None:
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.client_context = client_context
        self.config = config
        #: "handshakes", "failures", "ragged_eofs", "timeouts"
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<ServerTLS timeout={self.handshake_timeout} counts={dict(self.counts)}>"

    def stats(self) -> dict[str, int]:
        """The TLS fields of :class:`~pytest_multiconn.ServerStats`."""
        counts = self.counts
        return {
            "tls_handshakes": counts["handshakes"],
            "tls_failures": counts["failures"],
            "tls_ragged_eofs": counts["ragged_eofs"],
        }

    def new_layer(self, conn: LayerHost, notify: Callable[[], None]) -> TLSLayer:
        """The TLS layer of one accepted connection (core's ``LayerFactory`` protocol)."""
        return TLSLayer(
            conn,
            self.context,
            server_side=True,
            handshake_timeout=self.handshake_timeout,
            counts=self.counts,
            notify=notify,
        )


def server_tls(tls: object) -> ServerTLS:
    """Normalise a server's ``tls=`` value: True, a :class:`TLSConfig`, or an SSLContext."""
    if isinstance(tls, ServerTLS):
        return ServerTLS(
            tls.context,
            handshake_timeout=tls.handshake_timeout,
            client_context=tls.client_context,
            config=tls.config,
        )
    if tls is True:
        tls = TLSConfig()
    if isinstance(tls, TLSConfig):
        return ServerTLS(
            tls.server_context,
            handshake_timeout=tls.handshake_timeout,
            client_context=tls.client_context,
            config=tls,
        )
    if isinstance(tls, ssl.SSLContext):
        if tls.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError(
                "a server's tls= got a client SSLContext; build a server one with "
                "ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), or pass a TLSConfig"
            )
        return ServerTLS(tls)
    raise TypeError(
        f"tls must be True, a TLSConfig or an ssl.SSLContext, got {type(tls).__name__}; "
        "use the multiconn_tls fixture or TLSConfig() for a throw-away CA"
    )


class ClientTLS:
    """One client's TLS: context, the name it verifies, handshake timeout and TLS faults."""

    def __init__(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        *,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        self.context = context
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout

    def __repr__(self) -> str:
        return f"<ClientTLS server_hostname={self.server_hostname!r}>"

    def new_layer(self, conn: LayerHost, notify: Callable[[], None] | None = None) -> TLSLayer:
        """The TLS layer of one client connection."""
        return TLSLayer(
            conn,
            self.context,
            server_side=False,
            server_hostname=self.server_hostname,
            handshake_timeout=self.handshake_timeout,
            notify=notify,
        )


def client_tls(
    tls: object,
    address: SocketAddress,
    server_hostname: str | None = None,
) -> ClientTLS:
    """Normalise a client's ``tls=`` value: an SSLContext, or a :class:`TLSConfig`."""
    timeout = DEFAULT_HANDSHAKE_TIMEOUT
    if isinstance(tls, TLSConfig):
        timeout = tls.handshake_timeout
        tls = tls.client_context
    if not isinstance(tls, ssl.SSLContext):
        raise TypeError(
            f"a client's tls must be an ssl.SSLContext or a TLSConfig, got {type(tls).__name__}; "
            "a server started with tls= gives the matching one as server.client_tls"
        )
    if server_hostname is None:
        # The name to check the certificate against: the host we dial (an IP address is
        # checked against the certificate's IP entries), or localhost for a Unix socket.
        server_hostname = "localhost" if isinstance(address, str) else str(address[0])
    return ClientTLS(tls, server_hostname, handshake_timeout=timeout)
