"""The UDP proxy's datagram faults, one per module, registered in :data:`UDP_FAULTS`."""

from pytest_multiconn.udp.faults.base import (
    UDP_FAULTS,
    Datagram,
    DatagramFault,
    DatagramPipeAPI,
    DatagramSink,
    DatagramStage,
)
from pytest_multiconn.udp.faults.corrupt import Corrupt, flip, flipped_bits
from pytest_multiconn.udp.faults.delay import Delay
from pytest_multiconn.udp.faults.drop import Drop
from pytest_multiconn.udp.faults.duplicate import Duplicate
from pytest_multiconn.udp.faults.reorder import Reorder
from pytest_multiconn.udp.faults.truncate import Truncate

__all__ = [
    "UDP_FAULTS",
    "Corrupt",
    "Datagram",
    "DatagramFault",
    "DatagramPipeAPI",
    "DatagramSink",
    "DatagramStage",
    "Delay",
    "Drop",
    "Duplicate",
    "Reorder",
    "Truncate",
    "flip",
    "flipped_bits",
]
