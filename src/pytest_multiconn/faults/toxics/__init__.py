"""The proxy's faults ("toxics", after toxiproxy), one module per toxic.

:mod:`~pytest_multiconn.faults.toxics.base` has what every toxic builds on (:class:`Toxic`,
:class:`Stage`, :class:`PipeAPI`, :class:`Sink`, the :data:`TOXICS` registry); each other
module holds one toxic and its stage, and registers it on import.
"""

# isort: off
# Import order is registration order: TOXICS lists them as toxiproxy's README does.
from pytest_multiconn.faults.toxics.base import (
    TOXICS,
    NotApplied,
    PipeAPI,
    QueueStage,
    Sink,
    Stage,
    Toxic,
)
from pytest_multiconn.faults.toxics.latency import Latency
from pytest_multiconn.faults.toxics.bandwidth import Bandwidth
from pytest_multiconn.faults.toxics.slicer import Slicer
from pytest_multiconn.faults.toxics.limit_data import LimitData
from pytest_multiconn.faults.toxics.timeout import Timeout
from pytest_multiconn.faults.toxics.reset_peer import ResetPeer
from pytest_multiconn.faults.toxics.slow_close import SlowClose
# Not in toxiproxy: corruption and reshaping.
from pytest_multiconn.faults.toxics.corrupt import Corrupt
from pytest_multiconn.faults.toxics.substitute import Substitute
from pytest_multiconn.faults.toxics.coalesce import Coalesce
from pytest_multiconn.faults.toxics.truncate import Truncate

# isort: on

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
