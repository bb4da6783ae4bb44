"""TLS fixtures: a session CA, a TLS echo server, and one test run over plaintext and TLS."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import trustme

    from pytest_multiconn.plugin.types import ServerFactory
    from pytest_multiconn.servers.echo import EchoServer
    from pytest_multiconn.tls.config import TLSConfig

#: Parameter ids of ``multiconn_any_server``: every test that uses it runs once per mode.
TRANSPORTS = ("plain", "tls")


@pytest.fixture(scope="session")
def multiconn_ca() -> trustme.CA:
    """A throw-away trustme.CA, made in memory once per session (per xdist worker).
    Session scope; nothing is written to disk; no teardown.
    """
    from pytest_multiconn.tls.certs import new_ca

    return new_ca()


@pytest.fixture(scope="session")
def multiconn_tls(multiconn_ca: trustme.CA) -> TLSConfig:
    """A TLSConfig on multiconn_ca: a server certificate for localhost, 127.0.0.1 and ::1,
    with .server_context and .client_context (it trusts only multiconn_ca).
    .replace(require_client_cert=True) makes it mutual TLS.
    Session scope; the contexts are built once and shared; no teardown.
    """
    from pytest_multiconn.tls.config import TLSConfig

    return TLSConfig(multiconn_ca)


@pytest.fixture
def multiconn_tls_server(
    request: pytest.FixtureRequest,
    multiconn_server_factory: ServerFactory,
    multiconn_tls: TLSConfig,
) -> EchoServer:
    """A started TLS EchoServer on 127.0.0.1 and an ephemeral port, with a certificate from
    multiconn_ca; server.client_tls is the client context to use.  Function scope; options
    come from the marker @pytest.mark.multiconn_server(**kwargs).  Teardown stops it and
    re-raises errors from its loop thread.
    """
    from pytest_multiconn.plugin.factory import server_marker_kwargs

    kwargs = server_marker_kwargs(request.node)
    kwargs.setdefault("tls", multiconn_tls)
    return multiconn_server_factory(**kwargs)


@pytest.fixture(params=TRANSPORTS)
def multiconn_any_server(
    request: pytest.FixtureRequest,
    multiconn_server_factory: ServerFactory,
    multiconn_tls: TLSConfig,
) -> EchoServer:
    """A started EchoServer, once in plaintext (id plain) and once over TLS (id tls): a test
    using it runs twice.  Connect with multiconn_client(server.address,
    tls=server.client_tls), which is right for both (client_tls is None in plaintext).
    Select one mode with -k plain or -k tls.  Function scope; options come from the marker
    @pytest.mark.multiconn_server(**kwargs).  Teardown stops it and re-raises errors from
    its loop thread.
    """
    from pytest_multiconn.plugin.factory import server_marker_kwargs

    kwargs = server_marker_kwargs(request.node)
    if request.param == "tls":
        kwargs.setdefault("tls", multiconn_tls)
    return multiconn_server_factory(**kwargs)
