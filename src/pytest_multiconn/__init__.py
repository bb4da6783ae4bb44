"""pytest-multiconn: make sockets misbehave on demand, in your own tests.

Everything public is re-exported here; the private modules may change without notice.
"""

from ._address import is_loopback, parse_hostport, parse_port
from ._client import (
    DEFAULT_MESSAGES,
    ClientResults,
    ConnectionResult,
    EchoMismatch,
    MultiConnClient,
    run_clients,
)
from ._connection import Connection, Transcript, TranscriptEntry
from ._errors import (
    AddressError,
    AddressInUseError,
    LeakError,
    LoopStuckError,
    LoopThreadError,
    MulticonnError,
    RemoteBindError,
    WaitTimeout,
)
from ._loop import Loop
from ._server import ConnectionInfo, EchoServer, ServerBase, ServerStats

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MESSAGES",
    "AddressError",
    "AddressInUseError",
    "ClientResults",
    "Connection",
    "ConnectionInfo",
    "ConnectionResult",
    "EchoMismatch",
    "EchoServer",
    "LeakError",
    "Loop",
    "LoopStuckError",
    "LoopThreadError",
    "MultiConnClient",
    "MulticonnError",
    "RemoteBindError",
    "ServerBase",
    "ServerStats",
    "Transcript",
    "TranscriptEntry",
    "WaitTimeout",
    "__version__",
    "is_loopback",
    "parse_hostport",
    "parse_port",
    "run_clients",
]
