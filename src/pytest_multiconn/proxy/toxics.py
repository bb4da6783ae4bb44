"""The proxy's faults ("toxics"): the stream faults of :mod:`pytest_multiconn.faults.toxics`.

Every server takes the same objects (``EchoServer(faults=[Latency(ms=50)])``); they live in
``faults`` and are named here too, for the proxy's code and its users.
"""

from pytest_multiconn.faults.toxics import (
    TOXICS,
    Bandwidth,
    Coalesce,
    Corrupt,
    Latency,
    LimitData,
    NotApplied,
    PipeAPI,
    QueueStage,
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

__all__ = [
    "TOXICS",
    "Bandwidth",
    "Coalesce",
    "Corrupt",
    "Latency",
    "LimitData",
    "NotApplied",
    "PipeAPI",
    "QueueStage",
    "ResetPeer",
    "Sink",
    "Slicer",
    "SlowClose",
    "Stage",
    "Substitute",
    "Timeout",
    "Toxic",
    "Truncate",
]
