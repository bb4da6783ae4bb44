"""Exceptions raised by pytest-multiconn.

Every error says what went wrong and what to do about it; the message is the documentation.
"""

from __future__ import annotations

from typing import Any


class MulticonnError(Exception):
    """Base class of every error pytest-multiconn raises on purpose."""


class AddressError(MulticonnError, ValueError):
    """A host, port or socket path that cannot be used (bad value, or refused on purpose)."""


class FaultParameterError(MulticonnError, ValueError, TypeError):
    """A fault (client fault, server fault, toxic) was given a bad parameter value.

    It is a ``ValueError`` and a ``TypeError`` both, so code that caught either from the old
    constructors still does; the message names the fault, the parameter and the value.
    """


class RemoteBindError(AddressError):
    """A non-loopback address was given without ``allow_remote=True``."""


class AddressInUseError(MulticonnError, OSError):
    """The requested address is already bound by another socket."""


class LoopStuckError(MulticonnError, RuntimeError):
    """The loop thread did not answer or stop within its timeout."""


class WaitTimeout(MulticonnError, TimeoutError):
    """A ``wait_for_*`` helper gave up; the message names what it waited for and the state."""


class WaitImpossible(WaitTimeout):
    """A ``wait_for_*`` that cannot succeed, raised at once instead of after its timeout: the
    service is stopped (its counts no longer change), or the wait was called from the service's
    own loop thread (which would have to make the progress it waits for).  A
    :class:`WaitTimeout`, so code that caught the late error still catches this one."""


class LoopThreadError(MulticonnError):
    """Raised by ``check()`` when the loop thread hit errors; the first one is the cause."""


class LeakError(MulticonnError, AssertionError):
    """A test left a loop thread running or a socket open."""


class ReplyMismatch(MulticonnError, AssertionError):
    """Raised by :meth:`ClientResults.check` when a connection failed or a reply of its
    exchange (``exchange=``: lines, HTTP, RESP, exact replies) was wrong or missing; the
    message says which reply, what was expected and what came."""


class EchoMismatch(ReplyMismatch):
    """Raised by :meth:`ClientResults.check` when a connection failed or its echo differed
    (an echo client: ``messages``).  A :class:`ReplyMismatch`, so one ``except`` catches
    either."""


class ServerProcessError(MulticonnError, RuntimeError):
    """The child server did not start, or had to be killed; the message has its output."""


class ContractBreak(MulticonnError, AssertionError):
    """An echo server broke a contract under a fault; the message says which and how."""


class TLSError(MulticonnError, ConnectionError):
    """A TLS handshake or record-layer failure on one connection (it closes; the loop goes on)."""


class BlockingCallError(MulticonnError, RuntimeError):
    """A blocking call was made from a thread running an event loop; use its awaitable twin."""


class ScriptMismatch(MulticonnError, AssertionError):
    """A client sent a scripted server something its script did not expect."""


class MissingExtraError(MulticonnError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class ToxiproxyError(MulticonnError):
    """A request the toxiproxy API refuses: ``status`` is the HTTP status toxiproxy answers
    with (400 bad input, 404 unknown proxy or toxic, 409 duplicate name, 500 a failed start),
    and ``str()`` is its ``"error"`` text."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: ``POST /populate`` only: the proxies made before the error (toxiproxy returns them).
        self.populated: list[dict[str, Any]] = []


class ToxiproxyConfigError(MulticonnError, ValueError):
    """A toxiproxy ``--config`` file that cannot be read, parsed or checked."""
