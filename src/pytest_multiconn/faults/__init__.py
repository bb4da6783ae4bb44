"""Every fault, in one namespace: client faults, server faults and TLS faults.

Client faults make :class:`~pytest_multiconn.MultiConnClient` connections misbehave
(``faults=[PartialSend(max_chunk=1)]``); server faults make a
:class:`FaultyEchoServer` misbehave; TLS faults break handshakes and certificates.  The proxy's
faults (toxics) live in :mod:`pytest_multiconn.proxy`.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.faults.client import (
    Burst,
    ClientFault,
    ConnectClose,
    FaultSession,
    Garbage,
    HalfClose,
    NeverClose,
    NeverRead,
    PartialSend,
    Reset,
    Silent,
    SlowReader,
    catalogue,
)
from pytest_multiconn.faults.server import (
    AcceptThenClose,
    ChunkedEcho,
    CloseAfter,
    ClosedPort,
    DelayEcho,
    FaultEvent,
    FaultyEchoServer,
    ResetAfter,
    ServerFault,
    ServerFaultSession,
    Stall,
    StopAccepting,
    closed_port_address,
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
    "AcceptThenClose",
    "Burst",
    "CertFault",
    "ChunkedEcho",
    "ClientFault",
    "CloseAfter",
    "ClosedPort",
    "ConnectClose",
    "DelayEcho",
    "ExpiredCert",
    "FaultEvent",
    "FaultSession",
    "FaultyEchoServer",
    "Garbage",
    "HalfClose",
    "NeverClose",
    "NeverRead",
    "NoCloseNotify",
    "PartialSend",
    "Reset",
    "ResetAfter",
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
]

publish(__name__, globals(), __all__)
