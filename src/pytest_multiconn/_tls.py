"""TLS for every server, client and fault: certificates from a trustme CA, and TLS connections.

Why ``wrap_socket`` and not ``MemoryBIO``
-----------------------------------------
asyncio layers an ``ssl.SSLObject`` over two ``MemoryBIO`` buffers between the raw socket and
the protocol.  That keeps TLS out of the socket, but every byte then crosses Python twice
(socket -> incoming BIO -> SSLObject -> protocol, and back), and our fault knobs would act on
ciphertext: ``max_send`` would cut a TLS record in half rather than make a small one.  We wrap
the socket instead (``do_handshake_on_connect=False``) and override only the raw I/O points of
:class:`~pytest_multiconn._connection.Connection`, in a subclass, so the plaintext hot path has
no TLS check at all.  ``Connection`` keeps counting plaintext, and every fault that works on
``max_send``, ``hold_output()`` or ``pause_reading()`` works unchanged over TLS: ``max_send=1``
makes one TLS record per byte, a peer that never reads fills the kernel buffers under the TLS
layer and the echo connection's back-pressure engages exactly as in plaintext.

What it costs (measured with benchmarks/tls.py, OpenSSL 3.0): with the socket BIO, OpenSSL
makes the system calls, and without ``read_ahead`` (which Python's ``ssl`` cannot switch on)
it reads each record in two ``read()`` calls, its 5-byte header and then its body, and writes
each record with its own ``write()``: about 230 system calls per MB echoed, where asyncio's
MemoryBIO path moves ~100 KiB per ``recv``/``send`` (about 17 per MB).  Bulk TLS echo
throughput is bounded by that, not by Python.  Handshakes are dominated by the crypto in
``do_handshake`` (about three quarters of the loop's time), where the socket BIO costs little.

Three OpenSSL rules shape the code:

* **Decrypted bytes the selector cannot see.**  ``SSL_read`` returns at most one record.  If we
  asked for fewer bytes than the record holds (a slow-reader fault sets ``read_size`` small),
  the rest is already decrypted inside OpenSSL (``sock.pending()``) and the kernel has nothing
  left to report, so the selector never wakes us for it.  After each read, and when reading
  resumes, we queue another read on the loop while ``pending()`` is non-zero.
* **Retry a write with the same data.**  After ``SSL_ERROR_WANT_WRITE`` OpenSSL has already
  encrypted part of the buffer; the retry must pass the same bytes, no fewer of them (CPython
  sets ``SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER``, so the address may change, but a shorter retry
  fails with "bad length").  ``Connection`` keeps unsent data at the front of its buffer, so
  we only remember the length we tried and never retry with less, whatever ``max_send`` says.
* **No safe half-close.**  TLS 1.3 allows one (``close_notify`` ends only the sender's
  direction), but CPython's ``unwrap()`` calls ``SSL_shutdown`` twice, and the second call
  reads: application data the peer sent before our ``close_notify`` reached it is consumed and
  rejected ("application data after close notify"), and the connection is dead.  A bare TCP
  FIN under TLS is no better: OpenSSL 3 treats an EOF without ``close_notify`` as fatal
  ("unexpected eof while reading") and answers with a ``decode_error`` alert, so the peer
  cannot write back either.  So ``write_eof()`` over TLS flushes, sends ``close_notify`` and
  a FIN, and keeps reading what comes after; it is reliable only once the peer has nothing
  more in flight, which is when the :class:`~pytest_multiconn.HalfClose` fault uses it over
  TLS (after the full echo, then it expects the server to close).  An EOF without
  ``close_notify`` is still an EOF to the echo server (it is counted in ``tls_ragged_eofs``).

Certificates are made in memory by :mod:`trustme`.  ``ssl`` can only load a private key from a
file, so it is written, mode 0600, in a private temporary directory (mode 0700) and removed as
soon as it is loaded; nothing is written anywhere else.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import shutil
import socket
import ssl
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trustme

from ._connection import Buffer, Connection
from ._errors import MulticonnError
from ._faults import ClientFault, FaultSession
from ._loop import EVENT_READ, EVENT_WRITE, Timer

if TYPE_CHECKING:
    from ._server import ServerBase

C = TypeVar("C", bound=Connection)

#: The names a test server is reached by: its certificate covers all of them.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

#: Seconds a peer has to complete the TLS handshake before the connection is closed.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: The close reason of a connection whose handshake did not finish in time.
HANDSHAKE_TIMEOUT_REASON = "TLS handshake timeout"


class TLSError(MulticonnError, ConnectionError):
    """A TLS handshake or record-layer failure on one connection (it closes; the loop goes on)."""


# -- certificates -----------------------------------------------------------------------------


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


# -- certificate faults (server side) -----------------------------------------------------------


class CertFault:
    """A server certificate that a correct client must refuse.

    ``context(ca, hosts)`` builds the server ``SSLContext`` that presents it.
    """

    #: What a correct client reports, as OpenSSL words it (used in test assertions).
    client_error = ""

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        raise NotImplementedError

    def context(self, ca: trustme.CA, hosts: Sequence[str] = DEFAULT_HOSTS) -> ssl.SSLContext:
        return server_context(ca, hosts, cert=self.cert(ca, hosts))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class WrongHostCert(CertFault):
    """A certificate issued by the trusted CA, but for another host name.

    A client that checks host names refuses it: "Hostname mismatch" ("IP address mismatch").
    """

    client_error = "mismatch"

    def __init__(self, host: str = "wrong.invalid") -> None:
        self.host = host

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        return issue_cert(ca, [self.host])

    def __repr__(self) -> str:
        return f"WrongHostCert({self.host!r})"


class ExpiredCert(CertFault):
    """A certificate for the right hosts, from the trusted CA, that expired yesterday.

    A client refuses it: "certificate has expired".
    """

    client_error = "certificate has expired"

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        return issue_cert(ca, hosts, not_before=now - 30 * day, not_after=now - day)


class UntrustedCert(CertFault):
    """A certificate for the right hosts from a CA that the client does not trust.

    A client refuses it: "unable to get local issuer certificate".
    """

    client_error = "unable to get local issuer certificate"

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        return issue_cert(new_ca(), hosts)


# -- configuration --------------------------------------------------------------------------------


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
        cert_fault: CertFault | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if not handshake_timeout > 0:
            raise ValueError(
                f"handshake_timeout must be a positive number of seconds, got {handshake_timeout!r}"
            )
        self.ca = ca if ca is not None else new_ca()
        self.hosts = tuple(hosts)
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

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=False
        )

    def adopt(self, conn: Connection, server: ServerBase) -> None:
        if not isinstance(conn, TLSConnectionMixin):
            raise TypeError(
                f"{type(conn).__name__} is not a TLS connection class; with tls= set, "
                "make_connection must return tls_connection_class(YourConnection)(...)"
            )
        conn.tls_setup(self.handshake_timeout, server=server)

    @staticmethod
    def connection_class(base: type[C]) -> type[C]:
        return tls_connection_class(base)


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

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        return self.context.wrap_socket(
            sock,
            server_side=False,
            server_hostname=self.server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=False,
        )

    def adopt(self, conn: Connection) -> None:
        if not isinstance(conn, TLSConnectionMixin):
            raise TypeError(f"{type(conn).__name__} is not a TLS connection class")
        conn.tls_setup(self.handshake_timeout)

    @staticmethod
    def connection_class(base: type[C]) -> type[C]:
        return tls_connection_class(base)


def client_tls(
    tls: object,
    address: Any,
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


# -- client TLS faults ----------------------------------------------------------------------------


def _tls_conn(conn: Any, fault: ClientFault) -> TLSConnectionMixin:
    if not isinstance(conn, TLSConnectionMixin):
        raise TypeError(f"{fault!r} is a TLS fault: give the client tls= (server.client_tls)")
    return conn


class _StallHandshakeSession(FaultSession):
    # The exchange ends when the server drops us (deliberate), or the client times out.
    reads = False

    def prepare(self) -> None:
        conn = _tls_conn(self.conn, self.fault)
        conn._tls_before_handshake = self._stall

    def _stall(self, conn: TLSConnectionMixin) -> None:
        if getattr(self.fault, "partial", True):
            hello = client_hello(conn.sock.context, conn.sock.server_hostname)
            half = hello[: max(1, len(hello) // 2)]
            # Bypass the TLS layer: these bytes go on the wire as they are.
            socket.socket.send(conn.sock, half)
            conn.transcript.record("out", len(half), note="half a ClientHello")
        conn.tls_stall()


class StallHandshake(ClientFault):
    """Connects, then stalls the TLS handshake: sends half a ClientHello (or nothing).

    The server must drop it when its handshake timeout expires; a client timeout fails it.
    """

    name = "stall_handshake"
    session_class = _StallHandshakeSession

    def __init__(self, partial: bool = True, *, probability: float = 1.0) -> None:
        super().__init__(probability=probability)
        self.partial = partial

    def params(self) -> dict[str, Any]:
        return {"partial": self.partial} | super().params()


class _NoCloseNotifySession(FaultSession):
    def prepare(self) -> None:
        _tls_conn(self.conn, self.fault).tls_close_notify = False


class NoCloseNotify(ClientFault):
    """Ends the exchange by closing TCP without sending TLS ``close_notify``.

    The server sees an EOF it cannot tell from a truncation attack (``tls_ragged_eofs``).
    """

    name = "no_close_notify"
    session_class = _NoCloseNotifySession


def client_hello(context: ssl.SSLContext, server_hostname: str | None) -> bytes:
    """The bytes of the ClientHello that ``context`` would send first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


# -- the connection -------------------------------------------------------------------------------

_NEW, _HANDSHAKING, _OPEN, _STALLED = "new", "handshaking", "open", "stalled"

#: The most plaintext one TLS record carries (RFC 8446, 5.1): SSL_read's most per call.
_MAX_RECORD = 16384


class TLSConnectionMixin(Connection):
    """TLS over a wrapped socket, for any :class:`Connection` subclass (see the module essay).

    Use :func:`tls_connection_class` to combine it with a connection class; the socket must be
    wrapped with ``do_handshake_on_connect=False`` before the connection is made.  The
    subclass's ``connection_made()`` runs once the handshake is done, not when TCP connects.
    """

    sock: ssl.SSLSocket

    # Class-level defaults, so the mixin needs no __init__ of its own (connection classes
    # have different constructor signatures).
    _tls_state = _NEW
    _tls_want = EVENT_READ
    _tls_timer: Timer | None = None
    _tls_retry_len = 0
    _tls_drain_queued = False
    #: An error (or the end of the stream) that a batched read met behind data.
    _tls_read_error: OSError | None = None
    _tls_server: ServerBase | None = None
    #: A fault's hook that replaces the handshake (StallHandshake).
    _tls_before_handshake: Callable[[TLSConnectionMixin], None] | None = None
    _tls_stalled_at = 0.0
    _tls_handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT
    #: Send ``close_notify`` when closing (a fault turns it off).
    tls_close_notify = True
    #: Why TLS failed on this connection ("" while it has not).
    tls_failure = ""
    #: True when the peer closed TCP without sending ``close_notify`` first.
    tls_ragged_eof = False
    #: The negotiated protocol ("TLSv1.3"), once the handshake is done.
    tls_version: str | None = None

    def tls_setup(
        self,
        handshake_timeout: float,
        *,
        server: ServerBase | None = None,
    ) -> None:
        self._tls_handshake_timeout = handshake_timeout
        self._tls_server = server

    def __repr__(self) -> str:
        text = super().__repr__()
        version = f" {self.tls_version}" if self.tls_version else ""
        return f"{text[:-1]} tls={self._tls_state}{version}>"

    @property
    def tls_established(self) -> bool:
        return self._tls_state == _OPEN

    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified certificate (``SSLSocket.getpeercert()``), or None."""
        if self.closed or self._tls_state != _OPEN:
            return None
        return self.sock.getpeercert()

    # -- counters ---------------------------------------------------------------------------
    def _tls_count(self, what: str) -> None:
        server = self._tls_server
        if server is not None and server.tls is not None:
            server.tls.counts[what] += 1
            server._notify()

    # -- handshake --------------------------------------------------------------------------
    def connection_made(self) -> None:
        # TCP is up (accepted, or our connect finished); TLS is not.  The subclass's hook
        # runs from _tls_handshake once the handshake is done.
        self._tls_state = _HANDSHAKING
        # The timer holds a weak reference: a cancelled timer stays in the loop's heap until
        # it is due, and must not keep this connection (and its SSL object) alive that long.
        self._tls_timer = self.loop.call_later(
            self._tls_handshake_timeout, _handshake_timer_fired, weakref.ref(self)
        )
        if self._tls_before_handshake is not None:
            self._tls_before_handshake(self)
            return
        self._tls_handshake()

    def _tls_handshake(self) -> None:
        # SSLSocket.do_handshake() sets the socket's timeout around the call (two ioctl()
        # system calls each time) and checks that it is connected: we already know both, so
        # we call the SSL object under it.
        try:
            self.sock._sslobj.do_handshake()  # type: ignore[attr-defined]  # see above
        except ssl.SSLWantReadError:
            self._tls_set_want(EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._tls_set_want(EVENT_WRITE)
            return
        except OSError as exc:  # SSLError included
            self._tls_fail(f"TLS handshake failed: {_handshake_error(exc)}", exc)
            return
        self._tls_state = _OPEN
        if self._tls_timer is not None:
            self._tls_timer.cancel()
            self._tls_timer = None
        obj = self.sock._sslobj  # type: ignore[attr-defined]  # see _tls_handshake
        self.tls_version = obj.version()
        cipher = obj.cipher()
        name = cipher[0] if cipher else ""
        self.transcript.record("note", note=f"TLS established: {self.tls_version} {name}")
        self._tls_count("handshakes")
        super().connection_made()
        if self.closed:
            return
        self._update_interest()
        self._tls_queue_drain()

    def _tls_set_want(self, mask: int) -> None:
        self._tls_want = mask
        self._update_interest()

    def _tls_timed_out(self) -> None:
        self._tls_timer = None
        if self.closed or self._tls_state == _OPEN:
            return
        self._tls_count("timeouts")
        self._tls_fail(
            HANDSHAKE_TIMEOUT_REASON,
            TLSError(
                f"TLS handshake not complete after {self._tls_handshake_timeout}s ({self.label})"
            ),
        )

    def tls_stall(self) -> None:
        """Stop the handshake here (a fault); only notice the peer closing."""
        self._tls_state = _STALLED
        self._tls_stalled_at = time.monotonic()
        if self._tls_timer is not None:
            self._tls_timer.cancel()  # we stall on purpose: only the peer's timeout counts
            self._tls_timer = None
        self._tls_want = EVENT_READ
        self._update_interest()

    def _tls_stalled_read(self) -> None:
        try:
            data = socket.socket.recv(self.sock, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data = b""
            note = f"{type(exc).__name__}"
        else:
            note = f"{len(data)} B" if data else "EOF"
        if data:
            self.transcript.record("in", len(data), note="raw, handshake stalled")
            return
        waited = time.monotonic() - self._tls_stalled_at
        text = f"peer dropped the stalled TLS handshake after {waited:.2f}s ({note})"
        deliberate_close = getattr(self, "deliberate_close", None)
        if deliberate_close is not None:
            deliberate_close(text)  # a fault client: this is the outcome it waited for
        else:
            self.close(ConnectionAbortedError(text), reason="peer closed during stalled handshake")

    def _tls_fail(self, reason: str, exc: BaseException) -> None:
        if self.closed:
            return
        self.tls_failure = reason
        self.transcript.record("note", note=reason)
        error = exc
        if not isinstance(exc, TLSError):
            error = TLSError(f"{reason} ({self.label}, peer {self.peer!r})")
            error.__cause__ = exc
        self.close(error, reason=reason)
        self._tls_count("failures")  # after close: a waiter sees the connection gone too

    # -- selector interest --------------------------------------------------------------------
    def _update_interest(self) -> None:
        state = self._tls_state
        if state in (_OPEN, _NEW) or self.closed:
            super()._update_interest()
            return
        mask = self._tls_want
        if mask == self._mask:
            return
        if self._mask == 0:
            self.loop.register(self.sock, mask, self)
        else:
            self.loop.modify(self.sock, mask, self)
        self._mask = mask

    def handle_event(self, mask: int) -> None:
        state = self._tls_state
        if state == _HANDSHAKING:
            self._tls_handshake()
        elif state == _STALLED:
            self._tls_stalled_read()
        else:
            super().handle_event(mask)

    # -- I/O ------------------------------------------------------------------------------------
    # The hot path calls the SSL object under the SSLSocket (``sock._sslobj``): the SSLSocket
    # methods only add checks we have already made (closed? connected? flags?) and a Python
    # frame or two per call, which at one call per 16 KiB record is a measurable share of an
    # echo server's time.  After ``unwrap()`` the SSL object is gone and the socket is plain
    # TCP again, as SSLSocket's own methods would treat it.
    def _recv(self) -> bytes:
        obj = self.sock._sslobj  # type: ignore[attr-defined]  # see above
        if obj is None:
            return self.sock.recv(self.read_size)
        deferred = self._tls_read_error
        if deferred is not None:
            self._tls_read_error = None
            return self._tls_read_failed(deferred)
        size = self.read_size
        try:
            data: bytes = obj.read(size)
        except OSError as exc:  # SSLError included
            return self._tls_read_failed(exc)
        if len(data) == _MAX_RECORD and size > _MAX_RECORD:
            # SSL_read returns one record (at most 16 KiB) per call.  Bulk data comes in full
            # records: take every one the kernel already holds, up to read_size, as recv() on
            # a plain socket would (one data_received() and one echo write per readiness
            # event, not per record).  A short record ends the batch, so the records a fault
            # makes small (PartialSend, max_send) still arrive one per read, where a test can
            # see their boundaries.
            parts = [data]
            got = len(data)
            more = data
            try:
                while got < size and len(more) == _MAX_RECORD:
                    more = obj.read(size - got)
                    if not more:
                        break  # close_notify: the next read reports it again
                    parts.append(more)
                    got += len(more)
            except ssl.SSLWantReadError:
                pass
            except OSError as exc:
                # The end of the stream or an error behind the data: deliver the data now,
                # and the error on the next read (queued, as the selector may not wake us).
                self._tls_read_error = exc
            if len(parts) > 1:
                data = b"".join(parts)
        if self._tls_read_error is not None or obj.pending():
            self._tls_queue_drain()
        return data

    def _tls_read_failed(self, exc: OSError) -> bytes:
        """What a failed read means: wait (BlockingIOError), end of stream (b""), or an error."""
        if isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
            # WANT_WRITE: only renegotiation (TLS 1.2) reads that need a write; the next
            # writable event lets OpenSSL flush, and the kernel still holds what we must read.
            raise BlockingIOError from None
        if isinstance(exc, ssl.SSLZeroReturnError):
            # The peer's close_notify, after we sent ours (CPython returns b"" only while we
            # have not): a clean end of stream all the same.
            return b""
        if isinstance(exc, ssl.SSLEOFError):
            self.tls_ragged_eof = True
            self._tls_count("ragged_eofs")
            self.transcript.record("note", note="EOF without close_notify")
            return b""
        if isinstance(exc, ssl.SSLError):
            raise TLSError(f"TLS error: {_ssl_reason(exc)}") from exc
        raise exc

    def _tls_queue_drain(self) -> None:
        if self._tls_drain_queued or self.closed:
            return
        obj = self.sock._sslobj  # type: ignore[attr-defined]  # see _recv
        if self._tls_read_error is not None or (obj is not None and obj.pending()):
            self._tls_drain_queued = True
            self.loop.call_soon(self._tls_drain)

    def _tls_drain(self) -> None:
        # Bytes already decrypted inside OpenSSL (or an error read behind data): the selector
        # will not report them.
        self._tls_drain_queued = False
        if self.closed or self.reading_paused or self.eof_received or self._tls_state != _OPEN:
            return
        self._on_readable()

    def resume_reading(self) -> None:
        super().resume_reading()
        if self._tls_state == _OPEN:
            self._tls_queue_drain()

    def _send(self, data: Buffer) -> int:
        if self._tls_state != _OPEN:
            raise BlockingIOError  # buffered until the handshake is done
        obj = self.sock._sslobj  # type: ignore[attr-defined]  # see _recv
        size = len(data)
        limit = self.max_send
        n = size if limit is None else min(limit, size)
        # After WANT_WRITE, OpenSSL must see the same bytes again, never fewer.
        n = min(max(n, self._tls_retry_len), size)
        try:
            if obj is None:
                with memoryview(data) as view, view[:n] as chunk:
                    sent: int = self.sock.send(chunk)
            elif n == size:
                sent = obj.write(data)
            else:
                with memoryview(data) as view, view[:n] as chunk:
                    sent = obj.write(chunk)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._tls_retry_len = n
            raise BlockingIOError from None
        except ssl.SSLError as exc:
            raise TLSError(f"TLS error: {_ssl_reason(exc)}") from exc
        self._tls_retry_len = 0
        return sent

    def _peer_failed(self, exc: OSError) -> None:
        if isinstance(exc, TLSError) and not self.closed:
            reason = str(exc)
            self.tls_failure = reason
            self.transcript.record("note", note=reason)
            self.close(exc, reason=reason)
            self._tls_count("failures")
            return
        super()._peer_failed(exc)

    #: HalfClose over TLS waits for the full echo before write_eof() (see the module essay).
    tls_half_close_safe = False

    def _shutdown_write(self) -> None:
        # close_notify, then a FIN under the TLS layer (SSLSocket.shutdown() would also drop
        # TLS from our own reads); see the module essay for why this is not a safe half-close.
        self._eof_pending = False
        self._eof_sent = True
        if self._tls_state == _OPEN and self.tls_close_notify and not self.tls_ragged_eof:
            self._tls_send_close_notify()
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError as exc:
            self._peer_failed(exc)
            return
        self.transcript.record("eof-out")
        if self._eof_received:
            self.close(reason="both sides closed")

    def reset(self) -> None:
        self.tls_close_notify = False
        super().reset()

    def close(self, exc: BaseException | None = None, reason: str = "") -> None:
        if self.closed:
            return
        if self._tls_timer is not None:
            self._tls_timer.cancel()
            self._tls_timer = None
        if (
            self._tls_state == _OPEN
            and exc is None
            and self.tls_close_notify
            and not self._eof_sent
            and not self.tls_ragged_eof  # OpenSSL refuses after an unexpected EOF
        ):
            self._tls_send_close_notify()
        super().close(exc, reason)

    def _tls_send_close_notify(self) -> None:
        try:
            self.sock.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; the peer's close_notify is not awaited (we are closing)
        except ssl.SSLWantWriteError:
            self.transcript.record("note", note="close_notify not sent: send buffer full")
            return
        except (ssl.SSLError, OSError) as exc:
            if getattr(exc, "errno", None) in (errno.EPIPE, errno.ECONNRESET):
                return
            # Sent, but OpenSSL's second SSL_shutdown() call found data after it.
        self.transcript.record("note", note="close_notify sent")


def _handshake_timer_fired(ref: weakref.ref[TLSConnectionMixin]) -> None:
    conn = ref()
    if conn is not None:
        conn._tls_timed_out()


def _handshake_error(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLEOFError):
        return "peer closed the connection"
    if isinstance(exc, ssl.SSLError):
        return _ssl_reason(exc)
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).replace("_", " ").lower()
    return str(exc)


_tls_classes: dict[type[Connection], type[Connection]] = {}


def tls_connection_class(base: type[C]) -> type[C]:
    """``base`` with TLS: a subclass of :class:`TLSConnectionMixin` and ``base`` (cached)."""
    if issubclass(base, TLSConnectionMixin):
        return base
    cls = _tls_classes.get(base)
    if cls is None:
        namespace = {"__module__": base.__module__}
        cls = type(f"TLS{base.__name__}", (TLSConnectionMixin, base), namespace)
        _tls_classes[base] = cls
    return cls  # type: ignore[return-value]  # built as a subclass of base just above


# -- command line ------------------------------------------------------------------------------


def add_server_tls_arguments(parser: Any) -> None:
    """``--tls`` and ``--ca-out`` for ``multiconn server``."""
    parser.add_argument(
        "--tls", action="store_true",
        help="serve TLS with a certificate from a throw-away CA, whose certificate is written "
        "to a file (printed) for clients such as `openssl s_client -CAfile FILE`",
    )
    parser.add_argument(
        "--ca-out", default=None, metavar="PATH",
        help="with --tls: write the CA certificate here (a file or a directory) and keep it; "
        "default: a temporary directory removed when the server exits",
    )


def add_client_tls_arguments(parser: Any) -> None:
    """``--tls``, ``--cafile`` and ``--server-hostname`` for client commands."""
    parser.add_argument("--tls", action="store_true", help="connect with TLS (needs --cafile)")
    parser.add_argument(
        "--cafile", default=None, metavar="PATH",
        help="with --tls: the CA certificate to trust (what `multiconn server --tls` printed)",
    )
    parser.add_argument(
        "--server-hostname", default=None, metavar="NAME",
        help="with --tls: the name to check the certificate against (default: the host)",
    )


@contextlib.contextmanager
def cli_server_tls(args: Any, out: Callable[[str], None]) -> Iterator[TLSConfig | None]:
    """The TLS of ``multiconn server`` from its arguments; removes a temporary CA file after."""
    if not getattr(args, "tls", False):
        if getattr(args, "ca_out", None):
            raise ValueError("--ca-out needs --tls")
        yield None
        return
    config = TLSConfig()
    temporary = args.ca_out is None
    directory = tempfile.mkdtemp(prefix="multiconn-ca-") if temporary else args.ca_out
    try:
        path = config.write_ca_cert(directory)
        out(f"TLS CA certificate: {path}")
        yield config
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def cli_client_tls(args: Any) -> ssl.SSLContext | None:
    """A client SSLContext from ``--tls --cafile PATH``, or None without ``--tls``."""
    if not getattr(args, "tls", False):
        if getattr(args, "cafile", None):
            raise ValueError("--cafile needs --tls")
        return None
    if not args.cafile:
        raise ValueError(
            "--tls needs --cafile PATH: the CA certificate `multiconn server --tls` printed"
        )
    if not os.path.isfile(args.cafile):
        raise ValueError(f"--cafile {args.cafile!r}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=args.cafile)
    return ctx
