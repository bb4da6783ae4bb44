"""UDP: a datagram echo server, a fault-injecting UDP proxy and a multi-client datagram client.

toxiproxy has no UDP at all, yet DNS, QUIC, syslog, statsd and game protocols live there.
Everything runs on the same selector loop as the TCP side (:mod:`pytest_multiconn.lowlevel`),
on loopback unless ``allow_remote=True``::

    from pytest_multiconn.udp import Drop, MultiDatagramClient, UDPEchoServer, UDPFaultProxy

    with UDPEchoServer() as server, UDPFaultProxy(server, seed=7) as proxy:
        proxy.add(Drop(probability=0.5), "upstream")
        results = MultiDatagramClient(proxy, 2, 20, expect=proxy.wait_echo_settled).run()
        assert results.total("lost") == proxy.stats().upstream_in - proxy.stats().upstream_out

Datagram faults (:data:`UDP_FAULTS`): :class:`Drop`, :class:`Duplicate`, :class:`Reorder`,
:class:`Delay`, :class:`Truncate`, :class:`Corrupt`; their ``probability`` is drawn per
datagram, from ``fault_rng(seed, "udp", session, direction, entry name)``.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.udp.base import UDPServerBase
from pytest_multiconn.udp.client import (
    DatagramClientResult,
    DatagramResults,
    MultiDatagramClient,
    payload,
)
from pytest_multiconn.udp.echo import UDPEchoServer, UDPStats
from pytest_multiconn.udp.endpoint import DatagramEndpoint, bind_datagram
from pytest_multiconn.udp.faults import (
    UDP_FAULTS,
    Corrupt,
    Datagram,
    DatagramFault,
    DatagramPipeAPI,
    DatagramSink,
    DatagramStage,
    Delay,
    Drop,
    Duplicate,
    Reorder,
    Truncate,
    flip,
    flipped_bits,
)
from pytest_multiconn.udp.faults.base import FaultAction
from pytest_multiconn.udp.proxy import UDPFaultProxy, UDPProxyStats, UDPSessionInfo

__all__ = [
    "UDP_FAULTS",
    "Corrupt",
    "Datagram",
    "DatagramClientResult",
    "DatagramEndpoint",
    "DatagramFault",
    "DatagramPipeAPI",
    "DatagramResults",
    "DatagramSink",
    "DatagramStage",
    "Delay",
    "Drop",
    "Duplicate",
    "FaultAction",
    "MultiDatagramClient",
    "Reorder",
    "Truncate",
    "UDPEchoServer",
    "UDPFaultProxy",
    "UDPProxyStats",
    "UDPServerBase",
    "UDPSessionInfo",
    "UDPStats",
    "bind_datagram",
    "flip",
    "flipped_bits",
    "payload",
]

publish(__name__, globals(), [n for n in __all__ if n != "UDP_FAULTS"])
