"""Exchanges: what one client sends and how to tell that the reply is complete and right.

``Echo()`` (the default everywhere), ``Exact(send, expect)``, ``Lines()``,
``LengthPrefixed()``, ``Framed(send, framer)`` for your own framing rule, ``HTTP()`` (h11,
extra ``[http]``) and ``RESP()`` (Redis).  :func:`by_name` maps a ``--protocol`` name to one.
"""

from __future__ import annotations

from typing import Any

from pytest_multiconn.core.public import publish
from pytest_multiconn.exchanges.base import (
    GARBAGE_ANSWERS,
    Exchange,
    ReplyChecker,
    ReplyFramer,
    ReplyOutcome,
    ReplyReader,
    describe_difference,
    first_difference,
)
from pytest_multiconn.exchanges.resp import RESP, encode_command, resp_length
from pytest_multiconn.exchanges.simple import Echo, Exact, Framed, LengthPrefixed, Lines, matching

#: The names ``--protocol`` accepts.
PROTOCOLS = ("echo", "line", "http", "redis", "exact", "length")


def HTTP(*args: Any, **kwargs: Any) -> Exchange:
    """``HTTP(method="GET", target="/", ...)``: see :class:`pytest_multiconn.exchanges.http.HTTP`
    (imported on use, so h11 is needed only by those who speak HTTP)."""
    from pytest_multiconn.exchanges.http import HTTP as _HTTP

    return _HTTP(*args, **kwargs)


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def by_name(  # noqa: PLR0911 - one return per protocol reads best
    protocol: str, *, send: bytes | str | None = None, expect: bytes | str | None = None
) -> Exchange:
    """The exchange for a ``--protocol`` name; ``send``/``expect`` fix the request/reply."""
    send = None if send is None else _b(send)
    expect = None if expect is None else _b(expect)
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if protocol == "exact":
        if send is None or expect is None:
            raise ValueError("--protocol exact needs both --send and --expect")
        return Exact(send, expect)
    if protocol == "echo":
        if expect is not None:
            raise ValueError("--protocol echo expects the request back; --expect does not apply")
        return Echo(messages=(send,) if send is not None else ())
    if protocol == "line":
        kwargs: dict[str, Any] = {}
        if send is not None:
            kwargs["send"] = send
        if expect is not None:
            kwargs["expect"] = expect
        return Lines(**kwargs)
    if protocol == "length":
        return LengthPrefixed(send=send)
    if protocol == "http":
        if send is not None:
            return HTTP(target=send.decode())
        return HTTP()
    if send is not None:
        return RESP(commands=[send.decode().split()], replies=[expect] if expect else ())
    return RESP()


__all__ = [
    "GARBAGE_ANSWERS",
    "HTTP",
    "PROTOCOLS",
    "RESP",
    "Echo",
    "Exact",
    "Exchange",
    "Framed",
    "LengthPrefixed",
    "Lines",
    "ReplyChecker",
    "ReplyFramer",
    "ReplyOutcome",
    "ReplyReader",
    "by_name",
    "describe_difference",
    "encode_command",
    "first_difference",
    "matching",
    "resp_length",
]

publish(__name__, globals(), __all__)
