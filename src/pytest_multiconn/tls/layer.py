"""TLS for every server, client and fault: certificates from a trustme CA, and TLS connections.

Why ``MemoryBIO`` and not ``wrap_socket``
-----------------------------------------
Each TLS connection is an ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` buffers
(``context.wrap_bio``), and the raw, non-blocking socket moves ciphertext in bulk: one
``recv(512 KiB)`` into the incoming BIO, then ``SSLObject.read()`` until it wants more; and
``SSLObject.write()`` of the plaintext, the outgoing BIO's ciphertext handed to ``send()`` at
once, the rest kept for ``EVENT_WRITE``.  The mixin overrides only the raw I/O points of
:class:`~pytest_multiconn.core.connection.Connection` (``_recv``, ``_send``, the readiness
handlers), so ``Connection`` keeps counting plaintext and its water marks, ``finish()``,
``write_eof()`` and fault knobs work unchanged.

The reason is system calls (measured with benchmarks/tls.py and ``strace -c``, OpenSSL 3.0).
A socket wrapped with ``wrap_socket`` lets OpenSSL make them, and without ``read_ahead``
(which Python's ``ssl`` cannot switch on) it reads every record with two ``read()`` calls, its
5-byte header and then its body, and writes every record with its own ``write()``: about 230
system calls per MB echoed.  Over memory BIOs a 16 MiB echo takes about 7 ``recv``/``send``
calls per MB on each side (``strace -c``), in the range of asyncio's ``SSLProtocol`` (about 17;
it reads 256 KiB at a time).  The copy through the BIOs costs far less than the system calls it
saves: in a profile of the echo benchmark, ``SSLObject.read``/``write`` (the crypto) and the
socket calls take almost all of the loop's busy time.

How the fault knobs act on ciphertext and plaintext:

* ``max_send`` caps the **plaintext** per ``SSLObject.write()``, and each such record goes to
  the kernel in a ``send()`` of its own, so ``max_send=1`` still makes one TLS record per byte
  (a short record the peer's reads see alone: see below).  ``_send`` returns the plaintext
  whose ciphertext the kernel took; ciphertext it did not take stands for the plaintext still
  at the front of ``Connection``'s buffer, and is sent first on the next writable event.  So
  the buffer, the high/low water marks and ``buffered`` count plaintext not yet on the wire:
  the ciphertext backlog give or take the 22 bytes per record, and a peer that never reads
  still makes an echo connection stop reading.
* ``hold_output()`` holds plaintext and ciphertext alike; ``read_size`` below 16 KiB (a slow
  reader) makes the raw ``recv()`` that small too, as in plaintext.

Three rules shape the read side:

* **One record per SSL_read.**  ``SSLObject.read()`` returns at most one record.  Full 16 KiB
  records are joined into one ``data_received()`` of up to 256 KiB (one echo write per batch,
  not per record; a 256 KiB client window and its record overhead fit one raw read); a short
  record ends a batch, so records a fault made small arrive one per
  ``data_received()``, where a test can see their boundaries.
* **Records the selector cannot see.**  One raw read can bring many records.  After a read
  the connection keeps decrypting what the incoming BIO holds, batch after batch, while it is
  reading; what is left when it pauses (back-pressure, a slow reader) is drained by a
  ``call_soon`` when reading resumes, and so is application data that came with the end of the
  handshake, or an error or ``close_notify`` met behind data (delivered on the next read).
* **No safe half-close.**  TLS 1.3 allows one (``close_notify`` ends only the sender's
  direction), but CPython's ``unwrap()`` calls ``SSL_shutdown`` twice, and the second call
  reads: records the peer sent before our ``close_notify`` reached it that are already in the
  incoming BIO can be consumed and rejected ("application data after close notify").  A bare
  TCP FIN under TLS is no better: OpenSSL 3 treats an EOF without ``close_notify`` as fatal
  ("unexpected eof while reading") and answers with an alert.  So ``write_eof()`` over TLS
  flushes, sends ``close_notify`` and a FIN, and keeps reading what comes after; it is reliable
  only once the peer has nothing more in flight, which is when the
  :class:`~pytest_multiconn.HalfClose` fault uses it over TLS (after the full echo, then it
  expects the server to close).  An EOF without ``close_notify`` is still an EOF to the echo
  server (it is counted in ``tls_ragged_eofs``).

The handshake pumps the same BIOs: raw bytes in, ``do_handshake()``, whatever OpenSSL wrote
(a flight, or the alert of a failed handshake) out.  ``close()`` sends ``close_notify``
(``unwrap()`` writes it to the outgoing BIO, behind the rest of any record the kernel took part
of) in one ``send()`` on a clean close, never after a reset or an error.

Certificates are made in memory by :mod:`trustme`.  ``ssl`` can only load a private key from a
file, so it is written, mode 0600, in a private temporary directory (mode 0700) and removed as
soon as it is loaded; nothing is written anywhere else.
"""

from __future__ import annotations

import contextlib
import datetime
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

from pytest_multiconn.core.connection import Buffer, Connection
from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, Timer
from pytest_multiconn.errors import TLSError
from pytest_multiconn.faults.client import ClientFault, FaultSession

if TYPE_CHECKING:
    from pytest_multiconn.core.server import ServerBase

C = TypeVar("C", bound=Connection)

#: The names a test server is reached by: its certificate covers all of them.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

#: Seconds a peer has to complete the TLS handshake before the connection is closed.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: The close reason of a connection whose handshake did not finish in time.
HANDSHAKE_TIMEOUT_REASON = "TLS handshake timeout"


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

    def wrap(self, sock: socket.socket) -> socket.socket:
        """``sock`` unchanged: TLS runs over memory BIOs that :meth:`adopt` sets up."""
        return sock

    def adopt(self, conn: Connection, server: ServerBase) -> None:
        if not isinstance(conn, TLSConnectionMixin):
            raise TypeError(
                f"{type(conn).__name__} is not a TLS connection class; with tls= set, "
                "make_connection must return tls_connection_class(YourConnection)(...)"
            )
        conn.tls_setup(self.context, self.handshake_timeout, server_side=True, server=server)

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

    def wrap(self, sock: socket.socket) -> socket.socket:
        """``sock`` unchanged: TLS runs over memory BIOs that :meth:`adopt` sets up."""
        return sock

    def adopt(self, conn: Connection) -> None:
        if not isinstance(conn, TLSConnectionMixin):
            raise TypeError(f"{type(conn).__name__} is not a TLS connection class")
        conn.tls_setup(
            self.context,
            self.handshake_timeout,
            server_side=False,
            server_hostname=self.server_hostname,
        )

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
            obj = conn.tls_object
            hello = client_hello(obj.context, obj.server_hostname)
            half = hello[: max(1, len(hello) // 2)]
            # Straight to the raw socket: these bytes go on the wire as they are.
            conn.sock.send(half)
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

#: Ciphertext asked of the kernel per ``recv()`` in bulk: room for a full 256 KiB batch and
#: its record overhead (22 B per record in TLS 1.3), and more behind it.
_RAW_READ = 512 * 1024

#: Plaintext per ``data_received()`` in bulk (a plaintext echo connection's 64 KiB read size
#: would mean four echo writes where one does).
_PLAIN_BATCH = 256 * 1024

#: Ciphertext per ``recv()`` during the handshake: a flight is a few KiB (a client
#: certificate chain included); whatever comes behind it waits in the BIO, drained once open.
_HANDSHAKE_READ = 64 * 1024

#: Plaintext per ``SSLObject.write()`` when ``max_send`` does not cap it: bounds the
#: ciphertext made ahead of the kernel's readiness.
_WRITE_CHUNK = 256 * 1024

#: Batches one readiness event may deliver before it yields to the loop (small records, each
#: delivered alone, can be thousands in one raw read).
_MAX_BATCHES = 1024


class TLSConnectionMixin(Connection):
    """TLS over memory BIOs, for any :class:`Connection` subclass (see the module essay).

    Use :func:`tls_connection_class` to combine it with a connection class; ``tls_setup()``
    (``ServerTLS.adopt`` / ``ClientTLS.adopt``) must run before the connection is made.  The
    subclass's ``connection_made()`` runs once the handshake is done, not when TCP connects.
    """

    # Class-level defaults, so the mixin needs no __init__ of its own (connection classes
    # have different constructor signatures).  tls_setup() sets the SSL object and its BIOs.
    _tls_obj: ssl.SSLObject
    _tls_c: Any  # the C-level SSL object under _tls_obj (the hot path calls it directly)
    _tls_in: ssl.MemoryBIO
    _tls_out: ssl.MemoryBIO
    _tls_state = _NEW
    _tls_want = EVENT_READ
    _tls_timer: Timer | None = None
    #: Ciphertext the kernel has not taken yet (it goes out before anything else).
    _tls_cout: bytes | memoryview = b""
    #: How many plaintext bytes at the front of the output buffer ``_tls_cout`` carries.
    _tls_cout_plain = 0
    #: One raw recv() per readiness event: batches after it use what is already buffered.
    _tls_raw_ok = False
    #: Set by _recv when it delivered something (the batch loop in _on_readable goes on).
    _tls_got = False
    #: False when the last batch ended because the incoming BIO ran dry.
    _tls_more = False
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
        context: ssl.SSLContext,
        handshake_timeout: float,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        server: ServerBase | None = None,
    ) -> None:
        """Make this connection's SSL object over two memory BIOs (before it is made)."""
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._tls_obj = context.wrap_bio(
            self._tls_in, self._tls_out, server_side=server_side, server_hostname=server_hostname
        )
        # SSLObject's methods are thin Python wrappers: one frame per record-sized call is a
        # measurable share of an echo server's time, so the hot path calls the C object.
        self._tls_c = self._tls_obj._sslobj  # type: ignore[attr-defined]  # see above
        self._tls_handshake_timeout = handshake_timeout
        self._tls_server = server

    def __repr__(self) -> str:
        text = super().__repr__()
        version = f" {self.tls_version}" if self.tls_version else ""
        return f"{text[:-1]} tls={self._tls_state}{version}>"

    @property
    def tls_established(self) -> bool:
        return self._tls_state == _OPEN

    @property
    def tls_object(self) -> ssl.SSLObject:
        """The connection's ``ssl.SSLObject`` (context, server_hostname, version, cipher...)."""
        return self._tls_obj

    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's verified certificate (``SSLObject.getpeercert()``), or None."""
        if self.closed or self._tls_state != _OPEN:
            return None
        return self._tls_obj.getpeercert()

    # -- counters ---------------------------------------------------------------------------
    def _tls_count(self, what: str) -> None:
        server = self._tls_server
        if server is not None and server.tls is not None:
            server.tls.counts[what] += 1
            server._notify()

    # -- ciphertext out -----------------------------------------------------------------------
    def _tls_flush_cout(self) -> bool:
        """Hand the ciphertext backlog to the kernel; True when none is left."""
        cout = self._tls_cout
        try:
            sent = self.sock.send(cout)
        except (BlockingIOError, InterruptedError):
            return False
        if sent == len(cout):
            self._tls_cout = b""
            return True
        self._tls_cout = memoryview(cout)[sent:]
        return False

    def _tls_push(self) -> None:
        """Send what OpenSSL wrote outside ``_send`` (handshake, tickets, alerts), in order."""
        data = self._tls_out.read()
        if not data:
            return
        if self._tls_cout:
            self._tls_cout = bytes(self._tls_cout) + data  # rare: behind a pending record
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            self._tls_cout = memoryview(data)[sent:]
            self._update_interest()

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

    def _tls_handshake_event(self, mask: int) -> None:
        try:
            if mask & EVENT_WRITE and self._tls_cout:
                self._tls_flush_cout()
            if mask & EVENT_READ:
                try:
                    data = self.sock.recv(_HANDSHAKE_READ)
                except (BlockingIOError, InterruptedError):
                    pass
                else:
                    if data:
                        self._tls_in.write(data)
                    else:
                        self._tls_in.write_eof()  # do_handshake reports the EOF
        except OSError as exc:
            self._tls_fail(f"TLS handshake failed: {_handshake_error(exc)}", exc)
            return
        self._tls_handshake()

    def _tls_handshake(self) -> None:
        done = False
        try:
            self._tls_c.do_handshake()
            done = True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:  # SSLError included
            self._tls_send_alert()
            self._tls_fail(f"TLS handshake failed: {_handshake_error(exc)}", exc)
            return
        try:
            self._tls_push()
        except OSError as exc:
            self._tls_fail(f"TLS handshake failed: {_handshake_error(exc)}", exc)
            return
        if not done:
            self._tls_set_want(EVENT_READ | (EVENT_WRITE if self._tls_cout else 0))
            return
        self._tls_state = _OPEN
        if self._tls_timer is not None:
            self._tls_timer.cancel()
            self._tls_timer = None
        obj = self._tls_c
        self.tls_version = obj.version()
        cipher = obj.cipher()
        name = cipher[0] if cipher else ""
        self.transcript.record("note", note=f"TLS established: {self.tls_version} {name}")
        self._tls_count("handshakes")
        super().connection_made()
        if self.closed:
            return
        self._update_interest()
        # The raw read that finished the handshake may have brought application data too.
        self._tls_queue_drain()

    def _tls_send_alert(self) -> None:
        # The alert OpenSSL wrote on a failed handshake: one try, the connection closes next.
        data = self._tls_out.read()
        if data and not self._tls_cout:
            with contextlib.suppress(OSError):
                self.sock.send(data)

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
            data = self.sock.recv(4096)
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
        # Connection's rule, plus: EVENT_WRITE while ciphertext is pending (a handshake
        # message or ticket can be, with no plaintext behind it).
        if self.closed:
            return
        state = self._tls_state
        if state in (_OPEN, _NEW):
            if self._connecting:
                mask = EVENT_WRITE
            else:
                mask = 0
                if not self._reading_paused and not self._eof_received:
                    mask |= EVENT_READ
                if (self._out or self._tls_cout or self._eof_pending) and not self._output_held:
                    mask |= EVENT_WRITE
        else:
            mask = self._tls_want
        self._set_interest(mask)

    def handle_event(self, mask: int) -> None:
        state = self._tls_state
        if state in (_OPEN, _NEW):
            super().handle_event(mask)
        elif state == _HANDSHAKING:
            self._tls_handshake_event(mask)
        elif state == _STALLED:
            self._tls_stalled_read()

    # -- plaintext in -------------------------------------------------------------------------
    def _on_readable(self) -> None:
        # One raw recv() per readiness event, then every batch it decrypts, each through
        # Connection's accounting: while the connection still reads.
        self._tls_raw_ok = True
        read_once = Connection._on_readable
        for _ in range(_MAX_BATCHES):
            self._tls_got = False
            read_once(self)
            if not self._tls_got or self.closed or self._reading_paused or self._eof_received:
                return
            if not self._tls_more and self._tls_read_error is None:
                return  # the BIO is dry: the selector reports the kernel's next bytes
        self._tls_queue_drain()

    def _recv(self) -> bytes:
        deferred = self._tls_read_error
        if deferred is not None:
            self._tls_read_error = None
            self._tls_got = True
            return self._tls_read_failed(deferred)
        size = self.read_size
        if size >= _MAX_RECORD:
            limit, raw = max(size, _PLAIN_BATCH), max(size, _RAW_READ)
        else:
            # A slow-reader fault: small reads from the kernel, as in plaintext.
            limit = raw = size
        data: bytes | None = None
        if self._tls_in.pending or self._tls_c.pending():
            data = self._tls_decrypt(limit)
        if data is None:
            if not self._tls_raw_ok:
                raise BlockingIOError
            self._tls_raw_ok = False
            cipher = self.sock.recv(raw)
            if cipher:
                self._tls_in.write(cipher)
            else:
                self._tls_in.write_eof()  # the next read says how: close_notify or not
            data = self._tls_decrypt(limit)
            if data is None:
                raise BlockingIOError
        self._tls_got = True
        return data

    def _tls_decrypt(self, limit: int) -> bytes | None:
        """Plaintext from the records buffered, up to ``limit``; None when a record is partial.

        SSL_read returns one record (at most 16 KiB) per call.  Full records are joined into
        one batch (one data_received() and one echo write, as recv() on a plain socket would
        give); a short record ends the batch, so records a fault makes small (PartialSend,
        max_send) still arrive one per read, where a test can see their boundaries.
        """
        read = self._tls_c.read
        self._tls_more = True
        try:
            data: bytes = read(limit)
        except ssl.SSLWantReadError:
            if self._tls_out.pending:
                self._tls_push()  # a post-handshake message asked for an answer
            return None
        except OSError as exc:  # SSLError included
            return self._tls_read_failed(exc)
        if len(data) == _MAX_RECORD and limit > _MAX_RECORD:
            parts = [data]
            got = len(data)
            more = data
            try:
                while got < limit and len(more) == _MAX_RECORD:
                    more = read(limit - got)
                    if not more:
                        # close_notify behind the data: the end of the stream, next read.
                        self._tls_read_error = ssl.SSLZeroReturnError("close_notify")
                        break
                    parts.append(more)
                    got += len(more)
            except ssl.SSLWantReadError:
                self._tls_more = False
            except OSError as exc:
                # The end of the stream or an error behind the data: deliver the data now,
                # the error on the next read (the batch loop, or a queued drain, makes it).
                self._tls_read_error = exc
            if len(parts) > 1:
                data = b"".join(parts)
        if self._tls_out.pending:
            self._tls_push()
        return data

    def _tls_read_failed(self, exc: OSError) -> bytes:
        """What a failed read means: wait (BlockingIOError), end of stream (b""), or an error."""
        if isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
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
        if self._tls_read_error is not None or self._tls_in.pending or self._tls_c.pending():
            self._tls_drain_queued = True
            self.loop.call_soon(self._tls_drain)

    def _tls_drain(self) -> None:
        # Records already in the incoming BIO (or an error read behind data): the selector
        # will not report them.
        self._tls_drain_queued = False
        if self.closed or self.reading_paused or self.eof_received or self._tls_state != _OPEN:
            return
        self._on_readable()

    def resume_reading(self) -> None:
        super().resume_reading()
        if self._tls_state == _OPEN:
            self._tls_queue_drain()

    # -- plaintext out ------------------------------------------------------------------------
    def _send(self, data: Buffer) -> int:
        """Encrypt from the front of ``data`` and send the ciphertext; the plaintext it covers.

        Connection keeps unsent plaintext at the front of its buffer and calls again with it,
        so ciphertext the kernel did not take (``_tls_cout``) stands for the first
        ``_tls_cout_plain`` bytes of the next call's ``data``: they count as sent once it is
        all out.  With ``max_send`` each call makes one record of at most that much plaintext
        and hands it to the kernel on its own, so the peer sees small records.
        """
        if self._tls_state != _OPEN:
            raise BlockingIOError  # buffered until the handshake is done
        if self._tls_cout:
            if not self._tls_flush_cout():
                raise BlockingIOError
            done = self._tls_cout_plain
            if done:
                self._tls_cout_plain = 0
                return done
        size = len(data)
        limit = self.max_send
        step = _WRITE_CHUNK if limit is None else min(limit, _WRITE_CHUNK)
        write = self._tls_c.write
        take = self._tls_out.read
        send = self.sock.send
        total = 0
        try:
            while total < size:
                n = min(step, size - total)
                if n == size:
                    write(data)
                else:
                    with memoryview(data) as view, view[total : total + n] as chunk:
                        write(chunk)
                cipher = take()
                try:
                    sent = send(cipher)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent < len(cipher):
                    self._tls_cout = memoryview(cipher)[sent:]
                    self._tls_cout_plain = n
                    if total:
                        return total
                    raise BlockingIOError
                total += n
                if limit is not None:
                    break
        except ssl.SSLError as exc:
            raise TLSError(f"TLS error: {_ssl_reason(exc)}") from exc
        return total

    def _on_writable(self) -> None:
        if self._tls_cout and not self._out and not self._output_held:
            # Ciphertext with no plaintext behind it (a handshake message, a ticket).
            try:
                if not self._tls_flush_cout():
                    return
            except OSError as exc:
                self._peer_failed(exc)
                return
            self._tls_cout_plain = 0
        super()._on_writable()

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
        # close_notify, then a FIN; reads go on (see the module essay for why this is not a
        # safe half-close).
        self._eof_pending = False
        self._eof_sent = True
        if self._tls_state == _OPEN and self.tls_close_notify and not self.tls_ragged_eof:
            self._tls_send_close_notify()
        try:
            self.sock.shutdown(socket.SHUT_WR)
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
        self._tls_cout = b""

    def _tls_send_close_notify(self) -> None:
        try:
            self._tls_obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # written; the peer's close_notify is not awaited (we are closing)
        except (ssl.SSLError, OSError):
            pass  # written; the second SSL_shutdown() call found records after it
        alert = self._tls_out.read()
        if not alert:
            self.transcript.record("note", note="close_notify not sent")
            return
        # Behind the rest of a record the kernel took part of: the peer needs it whole.
        data = bytes(self._tls_cout) + alert if self._tls_cout else alert
        try:
            sent = self.sock.send(data)
        except OSError as exc:
            self.transcript.record("note", note=f"close_notify not sent: {type(exc).__name__}")
            return
        if sent < len(data):
            self.transcript.record("note", note="close_notify not sent: send buffer full")
            return
        self._tls_cout = b""
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
        try:
            path = config.write_ca_cert(directory)
        except OSError as exc:
            # '/proc/version' gave a bare "[Errno 5] Input/output error": name the path.
            raise ValueError(
                f"--ca-out {directory!r}: cannot write the CA certificate there: "
                f"{exc.strerror or exc}"
            ) from exc
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
