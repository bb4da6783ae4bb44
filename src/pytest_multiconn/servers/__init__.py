"""Servers to test clients against: any protocol on the loop, ready-made fakes, a scripted one.

:class:`ProtocolServer` runs asyncio-shaped handlers (:class:`EchoProtocol`, the fakes
:class:`LineProtocol`, :class:`HTTPProtocol`, :class:`RedisProtocol`, or yours) and takes
``faults=[...]`` and ``tls=``.  :class:`ScriptedServer` plays a script of steps
(:class:`Expect`, :class:`Reply`, :class:`Pause`, :class:`WriteEOF`, :class:`Close`,
:class:`Abort`, :class:`Hang`) against each connection.
"""

from typing import TYPE_CHECKING

from pytest_multiconn.core.public import lazy_import, publish
from pytest_multiconn.servers.echo import EchoProtocol, EchoServer
from pytest_multiconn.servers.protocol import Handler, ProtocolServer, Transport

if TYPE_CHECKING:
    from pytest_multiconn.servers.fakes import HTTPProtocol, LineProtocol, RedisProtocol
    from pytest_multiconn.servers.scripted import (
        Abort,
        Close,
        Expect,
        Hang,
        Pause,
        Reply,
        ScriptedServer,
        ScriptFailure,
        WriteEOF,
    )

#: Imported on first use, and the module that defines each: the first echo server of a run
#: does not import the fakes' protocols (h11 and the exchanges) or the scripted server
#: (issue 25: 8.6 ms of the first use's import).
_LAZY: dict[str, str] = {
    **dict.fromkeys(["HTTPProtocol", "LineProtocol", "RedisProtocol"],
                    "pytest_multiconn.servers.fakes"),
    **dict.fromkeys(["Abort", "Close", "Expect", "Hang", "Pause", "Reply", "ScriptedServer",
                     "ScriptFailure", "WriteEOF"], "pytest_multiconn.servers.scripted"),
}  # fmt: skip

__all__ = [
    "Abort",
    "Close",
    "EchoProtocol",
    "EchoServer",
    "Expect",
    "HTTPProtocol",
    "Handler",
    "Hang",
    "LineProtocol",
    "Pause",
    "ProtocolServer",
    "RedisProtocol",
    "Reply",
    "ScriptFailure",
    "ScriptedServer",
    "Transport",
    "WriteEOF",
]

# EchoServer's public path stays the top level (``pytest_multiconn.EchoServer``), which
# publishes it after this module runs; only the names that live here are published here.
publish(__name__, globals(), [n for n in __all__ if n != "EchoServer" and n not in _LAZY])


__getattr__ = lazy_import(__name__, _LAZY)
