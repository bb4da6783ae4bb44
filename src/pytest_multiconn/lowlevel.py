"""The building blocks under the everyday API, for writing your own servers and faults.

``Loop`` is the selector loop thread; ``Connection`` a non-blocking connection on it (the
object in ``SelectorKey.data``); ``ServerBase`` a listener with counters and bounded waits;
``StreamLayer`` / ``LayerFactory`` what a byte layer under a connection (TLS is one) offers.
"""

from pytest_multiconn.core.address import is_loopback, parse_hostport, parse_port
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.layer import LayerFactory, LayerHost, StreamLayer
from pytest_multiconn.core.loop import Loop, Timer
from pytest_multiconn.core.public import publish
from pytest_multiconn.core.server import ConnectionInfo, ServerBase, ServerStats
from pytest_multiconn.core.transcript import Transcript, TranscriptEntry
from pytest_multiconn.core.wait import wait_until
from pytest_multiconn.servers.echo import EchoConnection

__all__ = [
    "Connection",
    "ConnectionInfo",
    "EchoConnection",
    "LayerFactory",
    "LayerHost",
    "Loop",
    "ServerBase",
    "ServerStats",
    "StreamLayer",
    "Timer",
    "Transcript",
    "TranscriptEntry",
    "is_loopback",
    "parse_hostport",
    "parse_port",
    "wait_until",
]

publish(__name__, globals(), __all__)
