"""Certificates for tests: a throw-away trustme CA, leaf certificates, and SSL contexts.

Certificates are made in memory by :mod:`trustme`.  ``ssl`` can only load a private key from a
file, so it is written, mode 0600, in a private temporary directory (mode 0700) and removed as
soon as it is loaded; nothing is written anywhere else.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path

import trustme

#: The names a test server is reached by: its certificate covers all of them.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


def new_ca() -> trustme.CA:
    """A fresh throw-away certificate authority (ECDSA, in memory)."""
    return trustme.CA(organization_name="pytest-multiconn test CA")


def _load_cert_chain(ctx: ssl.SSLContext, cert: trustme.LeafCert) -> None:
    # ssl.SSLContext.load_cert_chain only reads files (bpo-16487).  Write the key where
    # nobody else can read it, load it, and remove it at once.
    with tempfile.TemporaryDirectory(prefix="multiconn-tls-") as directory:
        os.chmod(directory, 0o700)
        path = os.path.join(directory, "key-and-chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.private_key_and_cert_chain_pem.bytes())
        ctx.load_cert_chain(path)


def issue_cert(
    ca: trustme.CA,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> trustme.LeafCert:
    """A leaf certificate from ``ca`` for ``hosts`` (names or IP addresses)."""
    hosts = tuple(hosts)
    if not hosts:
        raise ValueError("a certificate needs at least one host name or IP address")
    return ca.issue_cert(*hosts, not_before=not_before, not_after=not_after)


def server_context(
    ca: trustme.CA,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    *,
    require_client_cert: bool = False,
    cert: trustme.LeafCert | None = None,
) -> ssl.SSLContext:
    """A server ``SSLContext`` presenting a certificate from ``ca`` for ``hosts``.

    With ``require_client_cert`` it also demands a client certificate issued by ``ca``.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_cert_chain(ctx, cert if cert is not None else issue_cert(ca, hosts))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    return ctx


def client_context(
    ca: trustme.CA | None,
    *,
    cert: bool | trustme.LeafCert = False,
    client_name: str = "multiconn-client",
) -> ssl.SSLContext:
    """A client ``SSLContext`` that trusts ``ca`` (only it) and checks host names.

    ``cert=True`` also presents a client certificate issued by ``ca`` (mutual TLS).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca is not None:
        # create_default_context loaded the system store; a test client trusts only our CA.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(ctx)
    if cert is not False:
        if cert is True:
            if ca is None:
                raise ValueError("cert=True needs a CA to issue the client certificate")
            cert = ca.issue_cert(client_name)
        _load_cert_chain(ctx, cert)
    return ctx


def make_tls_pair(
    ca: trustme.CA | None = None,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    *,
    client_cert: bool = False,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """``(server_ctx, client_ctx)`` from ``ca`` (a new one if None).

    ``client_cert=True`` makes it mutual TLS: the server requires, and the client presents, a
    certificate from the same CA.
    """
    ca = ca if ca is not None else new_ca()
    return (
        server_context(ca, hosts, require_client_cert=client_cert),
        client_context(ca, cert=client_cert),
    )


def write_ca_cert(ca: trustme.CA, directory: str | os.PathLike[str] | None = None) -> Path:
    """Write ``ca``'s certificate (public, no key) as PEM; return its path.

    Without ``directory`` it goes in a new private temporary directory (the caller removes it).
    """
    if directory is None:
        directory = tempfile.mkdtemp(prefix="multiconn-ca-")
    where = Path(directory)
    path = where / "multiconn-ca.pem" if where.is_dir() else where
    ca.cert_pem.write_to_path(str(path))
    return path
