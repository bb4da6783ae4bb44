"""Every fault, in one namespace: client faults, server faults and TLS faults.

Client faults make :class:`~pytest_multiconn.MultiConnClient` connections misbehave
(``faults=[PartialSend(max_chunk=1)]``); server faults make a
:class:`FaultyEchoServer` misbehave; TLS faults break handshakes and certificates.  The proxy's
faults (toxics) live in :mod:`pytest_multiconn.proxy`.

Every family has one shape (:class:`Fault`): frozen parameters checked by
:mod:`pytest_multiconn.faults.params`, a ``name`` registered in the family's registry
(:data:`CLIENT_FAULTS`, :data:`SERVER_FAULTS`, ``proxy.TOXICS``), a ``probability``, seeded
random numbers from :func:`fault_rng`, and a narrow Protocol for the connection it acts on
(:class:`ClientConnectionAPI`, :class:`ServerConnectionAPI`, ``proxy.PipeAPI``).
"""

import warnings
from typing import Any

from pytest_multiconn.core.public import publish
from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults import params
from pytest_multiconn.faults.api import ClientConnectionAPI, ServerConnectionAPI
from pytest_multiconn.faults.base import Fault, Registry, fault_rng
from pytest_multiconn.faults.client import (
    CLIENT_FAULTS,
    Burst,
    ClientFault,
    ClientReset,
    ConnectClose,
    FaultSession,
    Garbage,
    HalfClose,
    NeverClose,
    NeverRead,
    PartialSend,
    Silent,
    SlowReader,
    catalogue,
)
from pytest_multiconn.faults.closed_port import ClosedPort, closed_port_address
from pytest_multiconn.faults.protocol_server import FaultyServer
from pytest_multiconn.faults.server import (
    SERVER_FAULTS,
    AcceptThenClose,
    ChunkedEcho,
    CloseAfter,
    DelayEcho,
    FaultEvent,
    FaultyEchoServer,
    ResetAfter,
    ServerFault,
    ServerFaultSession,
    Stall,
    StopAccepting,
)
from pytest_multiconn.faults.tls import (
    CertFault,
    ExpiredCert,
    NoCloseNotify,
    StallHandshake,
    UntrustedCert,
    WrongHostCert,
)

__all__ = [
    "CLIENT_FAULTS",
    "SERVER_FAULTS",
    "AcceptThenClose",
    "Burst",
    "CertFault",
    "ChunkedEcho",
    "ClientConnectionAPI",
    "ClientFault",
    "ClientReset",
    "CloseAfter",
    "ClosedPort",
    "ConnectClose",
    "DelayEcho",
    "ExpiredCert",
    "Fault",
    "FaultEvent",
    "FaultParameterError",
    "FaultSession",
    "FaultyEchoServer",
    "FaultyServer",
    "Garbage",
    "HalfClose",
    "NeverClose",
    "NeverRead",
    "NoCloseNotify",
    "PartialSend",
    "Registry",
    "ResetAfter",
    "ServerConnectionAPI",
    "ServerFault",
    "ServerFaultSession",
    "Silent",
    "SlowReader",
    "Stall",
    "StallHandshake",
    "StopAccepting",
    "UntrustedCert",
    "WrongHostCert",
    "catalogue",
    "closed_port_address",
    "fault_rng",
    "params",
]

publish(__name__, globals(), [n for n in __all__ if n != "params"])


def __getattr__(name: str) -> Any:
    if name == "Reset":
        warnings.warn(
            "pytest_multiconn.faults.Reset was renamed ClientReset (the client resets its own "
            "connection; ResetAfter is the server's, ResetPeer the proxy's); the old name goes "
            "away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return ClientReset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
