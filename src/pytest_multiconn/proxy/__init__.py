"""The fault-injecting TCP proxy and its faults ("toxics", after toxiproxy).

``FaultProxy(target)`` relays bytes to any TCP server or Unix socket and applies toxics per
direction (``proxy.add(Latency(ms=50), direction="downstream")``).  A custom toxic subclasses
:class:`Toxic` and returns a :class:`Stage` that talks to its direction only through
:class:`PipeAPI`.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.faults.conditions import When
from pytest_multiconn.faults.table import FaultInfo
from pytest_multiconn.faults.toxics import (
    TOXICS,
    Bandwidth,
    Coalesce,
    Corrupt,
    Latency,
    LimitData,
    PipeAPI,
    ResetPeer,
    Sink,
    Slicer,
    SlowClose,
    Stage,
    Substitute,
    Timeout,
    Toxic,
    Truncate,
)
from pytest_multiconn.proxy.handle import ProxiedConnection
from pytest_multiconn.proxy.proxy import FaultProxy

__all__ = [
    "TOXICS",
    "Bandwidth",
    "Coalesce",
    "Corrupt",
    "FaultInfo",
    "FaultProxy",
    "Latency",
    "LimitData",
    "PipeAPI",
    "ProxiedConnection",
    "ResetPeer",
    "Sink",
    "Slicer",
    "SlowClose",
    "Stage",
    "Substitute",
    "Timeout",
    "Toxic",
    "Truncate",
    "When",
]

publish(__name__, globals(), __all__)
