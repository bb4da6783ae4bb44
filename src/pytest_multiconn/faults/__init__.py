"""Every fault, in one namespace: what breaks a connection, and on which side.

Client faults make :class:`~pytest_multiconn.MultiConnClient` connections misbehave
(``faults=[PartialSend(max_chunk=1)]``); stream faults (toxics: :class:`Latency`,
:class:`Slicer`, :class:`ResetPeer`...) act on any server (``EchoServer(faults=[...])``,
``ProtocolServer(handler, faults=[...])``) and on the proxy (``proxy.add(...)``); TLS faults
break handshakes and certificates.

Every family has one shape (:class:`Fault`): frozen parameters checked by
:mod:`pytest_multiconn.faults.params`, a ``name`` registered in the family's registry
(:data:`CLIENT_FAULTS`, :data:`TOXICS`), a ``probability``, seeded random numbers from
:func:`fault_rng`, and a narrow Protocol for the connection it acts on
(:class:`ClientConnectionAPI`, :class:`PipeAPI`).
"""

from typing import TYPE_CHECKING

from pytest_multiconn.core.public import lazy_import, publish
from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults import params
from pytest_multiconn.faults.base import Fault, Registry, fault_rng
from pytest_multiconn.faults.toxics.base import PipeAPI, Sink, Stage, Toxic

if TYPE_CHECKING:
    from pytest_multiconn.faults.api import ClientConnectionAPI
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
    from pytest_multiconn.faults.conditions import When
    from pytest_multiconn.faults.table import FaultInfo
    from pytest_multiconn.faults.tls import (
        CertFault,
        ExpiredCert,
        NoCloseNotify,
        StallHandshake,
        UntrustedCert,
        WrongHostCert,
    )
    from pytest_multiconn.faults.toxics import (
        TOXICS,
        Bandwidth,
        Coalesce,
        Corrupt,
        Latency,
        LimitData,
        ResetPeer,
        Slicer,
        SlowClose,
        Substitute,
        Timeout,
        Truncate,
    )

#: Names imported on first use, and the module that defines each: a server imports only the
#: stream faults' base classes, not the client and TLS faults (trustme), nor the toxics
#: themselves until one is used (issue 25: the first server of a run imported 16 ms of them).
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ["CLIENT_FAULTS", "Burst", "ClientFault", "ClientReset", "ConnectClose", "FaultSession",
         "Garbage", "HalfClose", "NeverClose", "NeverRead", "PartialSend", "Silent",
         "SlowReader", "catalogue"],
        "pytest_multiconn.faults.client",
    ),
    **dict.fromkeys(
        ["CertFault", "ExpiredCert", "NoCloseNotify", "StallHandshake", "UntrustedCert",
         "WrongHostCert"],
        "pytest_multiconn.faults.tls",
    ),
    # The stream faults too: a server without faults imports only their base classes.
    **dict.fromkeys(
        ["TOXICS", "Bandwidth", "Coalesce", "Corrupt", "Latency", "LimitData", "ResetPeer",
         "Slicer", "SlowClose", "Substitute", "Timeout", "Truncate"],
        "pytest_multiconn.faults.toxics",
    ),
    "ClientConnectionAPI": "pytest_multiconn.faults.api",
    "When": "pytest_multiconn.faults.conditions",
    "FaultInfo": "pytest_multiconn.faults.table",
    "ClosedPort": "pytest_multiconn.faults.closed_port",
    "closed_port_address": "pytest_multiconn.faults.closed_port",
}  # fmt: skip

__all__ = [
    "CLIENT_FAULTS",
    "TOXICS",
    "Bandwidth",
    "Burst",
    "CertFault",
    "ClientConnectionAPI",
    "ClientFault",
    "ClientReset",
    "ClosedPort",
    "Coalesce",
    "ConnectClose",
    "Corrupt",
    "ExpiredCert",
    "Fault",
    "FaultInfo",
    "FaultParameterError",
    "FaultSession",
    "Garbage",
    "HalfClose",
    "Latency",
    "LimitData",
    "NeverClose",
    "NeverRead",
    "NoCloseNotify",
    "PartialSend",
    "PipeAPI",
    "Registry",
    "ResetPeer",
    "Silent",
    "Sink",
    "Slicer",
    "SlowClose",
    "SlowReader",
    "Stage",
    "StallHandshake",
    "Substitute",
    "Timeout",
    "Toxic",
    "Truncate",
    "UntrustedCert",
    "When",
    "WrongHostCert",
    "catalogue",
    "closed_port_address",
    "fault_rng",
    "params",
]

publish(__name__, globals(), [n for n in __all__ if n != "params" and n not in _LAZY])


__getattr__ = lazy_import(__name__, _LAZY)
