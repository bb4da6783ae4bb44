"""Servers built on core's :class:`~pytest_multiconn.core.server.ServerBase` (above ``tls``).

Any protocol on the loop (:class:`ProtocolServer`, asyncio-shaped handlers), ready-made
fakes, and a scripted server for testing clients.  Echo is one of those protocols:
:class:`EchoProtocol` is its handler, and ``EchoServer`` (re-exported here and from the top
level, where its public path is) is ``ProtocolServer(EchoProtocol)`` with a tuned plain path;
``EchoConnection`` is in :mod:`pytest_multiconn.lowlevel`.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.servers.echo import EchoProtocol, EchoServer
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
    "EchoProtocol",
    "EchoServer",
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

# EchoServer's public path stays the top level (``pytest_multiconn.EchoServer``), which
# publishes it after this module runs; only the names that live here are published here.
publish(__name__, globals(), [n for n in __all__ if n != "EchoServer"])
