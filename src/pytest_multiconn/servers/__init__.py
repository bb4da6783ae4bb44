"""Servers built on core's :class:`~pytest_multiconn.core.server.ServerBase` (above ``tls``).

Any protocol on the loop (:class:`ProtocolServer`, asyncio-shaped handlers), ready-made
fakes, and a scripted server for testing clients.  ``EchoServer`` is re-exported from the top
level and ``EchoConnection`` from :mod:`pytest_multiconn.lowlevel`.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.servers.fakes import HTTPProtocol, LineProtocol, RedisProtocol
from pytest_multiconn.servers.protocol import Handler, ProtocolServer, Transport
from pytest_multiconn.servers.scripted import (
    Close,
    Expect,
    HalfClose,
    Pause,
    Reply,
    Reset,
    ScriptedServer,
    ScriptFailure,
    Stall,
)

__all__ = [
    "Close",
    "Expect",
    "HTTPProtocol",
    "HalfClose",
    "Handler",
    "LineProtocol",
    "Pause",
    "ProtocolServer",
    "RedisProtocol",
    "Reply",
    "Reset",
    "ScriptFailure",
    "ScriptedServer",
    "Stall",
    "Transport",
]

publish(__name__, globals(), __all__)
