"""TLS faults: server certificates a correct client must refuse, and misbehaving TLS clients.

Certificate faults go in a :class:`~pytest_multiconn.tls.TLSConfig` (``cert_fault=``); the
client faults (:class:`StallHandshake`, :class:`NoCloseNotify`) go in a client's ``faults=``
and act on its connections' :class:`~pytest_multiconn.tls.stream.TLSLayer`.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import trustme

from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults.base import Fault
from pytest_multiconn.faults.client import ClientFault, FaultSession
from pytest_multiconn.faults.params import flag, param, text
from pytest_multiconn.tls.certs import DEFAULT_HOSTS, issue_cert, new_ca, server_context
from pytest_multiconn.tls.stream import TLSLayer

# -- certificate faults (server side) -----------------------------------------------------------


@dataclass(frozen=True, repr=False)
class CertFault(Fault):
    """A server certificate that a correct client must refuse.

    A :class:`~pytest_multiconn.faults.Fault` like every other (frozen, checked parameters,
    ``replace()``, the one repr); ``context(ca, hosts)`` builds the server ``SSLContext`` that
    presents it.  A server presents its certificate to every connection, so ``probability``
    stays 1.
    """

    family: ClassVar[str] = "certificate"
    name: ClassVar[str] = "cert_fault"
    #: What a correct client reports, as OpenSSL words it (used in test assertions).
    client_error: ClassVar[str] = ""

    def check(self) -> None:
        if self.probability != 1.0:
            raise FaultParameterError(
                f"{type(self).__name__}: a server presents its certificate to every "
                f"connection, so probability must be 1, got {self.probability!r}"
            )

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        raise NotImplementedError

    def context(self, ca: trustme.CA, hosts: Sequence[str] = DEFAULT_HOSTS) -> ssl.SSLContext:
        return server_context(ca, hosts, cert=self.cert(ca, hosts))


@dataclass(frozen=True, repr=False)
class WrongHostCert(CertFault):
    """A certificate issued by the trusted CA, but for another host name.

    A client that checks host names refuses it: "Hostname mismatch" ("IP address mismatch").
    """

    name: ClassVar[str] = "wrong_host_cert"
    client_error: ClassVar[str] = "mismatch"

    host: str = param("wrong.invalid", text())

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        return issue_cert(ca, [self.host])


@dataclass(frozen=True, repr=False)
class ExpiredCert(CertFault):
    """A certificate for the right hosts, from the trusted CA, that expired yesterday.

    A client refuses it: "certificate has expired".
    """

    name: ClassVar[str] = "expired_cert"
    client_error: ClassVar[str] = "certificate has expired"

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        return issue_cert(ca, hosts, not_before=now - 30 * day, not_after=now - day)


@dataclass(frozen=True, repr=False)
class UntrustedCert(CertFault):
    """A certificate for the right hosts from a CA that the client does not trust.

    A client refuses it: "unable to get local issuer certificate".
    """

    name: ClassVar[str] = "untrusted_cert"
    client_error: ClassVar[str] = "unable to get local issuer certificate"

    def cert(self, ca: trustme.CA, hosts: Sequence[str]) -> trustme.LeafCert:
        return issue_cert(new_ca(), hosts)


# -- client TLS faults ----------------------------------------------------------------------------


def _tls_layer(conn: Any, fault: ClientFault) -> TLSLayer:
    layer = getattr(conn, "layer", None)
    if not isinstance(layer, TLSLayer):
        raise TypeError(f"{fault!r} is a TLS fault: give the client tls= (server.client_tls)")
    return layer


class _StallHandshakeSession(FaultSession):
    # The exchange ends when the server drops us (deliberate), or the client times out.
    reads = False

    def prepare(self) -> None:
        _tls_layer(self.conn, self.fault).before_handshake = self._stall

    def _stall(self, layer: TLSLayer) -> None:
        conn = self.conn
        fault = self.fault
        if isinstance(fault, StallHandshake) and fault.partial:
            obj = layer.ssl_object
            hello = client_hello(obj.context, obj.server_hostname)
            half = hello[: max(1, len(hello) // 2)]
            # Straight to the raw socket: these bytes go on the wire as they are.
            conn.sock.send(half)
            conn.fault_note(f"sent half a ClientHello ({len(half)} B), then stalled")
        # The server dropping us is the outcome this fault waits for.
        layer.stall(on_peer_closed=conn.deliberate_close)


# Not in the client registry: the catalogue's faults run against any server, plain or TLS,
# and these two need a TLS client.
@dataclass(frozen=True, repr=False)
class StallHandshake(ClientFault):
    """Connects, then stalls the TLS handshake: sends half a ClientHello (or nothing).

    The server must drop it when its handshake timeout expires; a client timeout fails it.
    """

    name = "stall_handshake"
    session_class = _StallHandshakeSession

    partial: bool = param(True, flag())


class _NoCloseNotifySession(FaultSession):
    def prepare(self) -> None:
        _tls_layer(self.conn, self.fault).close_notify = False


@dataclass(frozen=True, repr=False)
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
