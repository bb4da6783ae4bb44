"""RESP, the Redis protocol: PING, SET and GET (or your own commands).

Why a small parser of our own: hiredis's ``Reader`` decodes replies but does not say how many
bytes one reply took, and pipelined replies must be split exactly.  :func:`resp_length` only
frames (it never builds values), in about thirty lines, for RESP2 and RESP3:

* ``+simple\\r\\n``, ``-error\\r\\n``, ``:int\\r\\n``, ``_\\r\\n``, ``#t\\r\\n``, ``,1.5\\r\\n``,
  ``(bignum\\r\\n``: one line;
* ``$n\\r\\n<n bytes>\\r\\n``, ``!n``, ``=n``: a length line then ``n`` bytes (``$-1``: null);
* ``*n``, ``~n``, ``>n``: ``n`` nested values; ``%n``, ``|n``: ``2n`` nested values
  (``*-1``: null).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pytest_multiconn.core.checks import check_count
from pytest_multiconn.exchanges.base import (
    Exchange,
    Flood,
    check_bytes,
    prefix_problem,
)

_LINE = frozenset(b"+-:_#,(")
_BULK = frozenset(b"$!=")
_AGGREGATE = {ord("*"): 1, ord("~"): 1, ord(">"): 1, ord("%"): 2, ord("|"): 2}
#: Size of the value the never-reader check GETs again and again.
FLOOD_VALUE = 1024
#: Nesting deeper than this is refused (a bound on the recursion).
MAX_DEPTH = 64


def resp_length(  # noqa: PLR0911, PLR0912 - one branch per RESP type, as the spec lists them
    buf: bytes, at: int = 0, depth: int = 0
) -> int | None:
    """The end offset of the RESP value starting at ``buf[at]`` (None: incomplete);
    ValueError when the bytes are not RESP."""
    if depth > MAX_DEPTH:
        raise ValueError(f"RESP nested deeper than {MAX_DEPTH}")
    if at >= len(buf):
        return None
    kind = buf[at]
    if kind not in _LINE and kind not in _BULK and kind not in _AGGREGATE:
        raise ValueError(f"not a RESP reply: starts with {bytes(buf[at : at + 40])!r}")
    end = buf.find(b"\r\n", at)
    if end < 0:
        return None
    after = end + 2
    if kind in _LINE:
        return after
    try:
        n = int(buf[at + 1 : end])
    except ValueError:
        raise ValueError(f"bad RESP length line {bytes(buf[at:end])[:40]!r}") from None
    if kind in _BULK:
        if n < 0:
            return after
        stop = after + n + 2
        if len(buf) < stop:
            return None
        if buf[stop - 2 : stop] != b"\r\n":
            raise ValueError(f"RESP bulk of {n} B not followed by CRLF")
        return stop
    if kind in _AGGREGATE:
        pos = after
        for _ in range(max(n, 0) * _AGGREGATE[kind]):
            nested = resp_length(buf, pos, depth + 1)
            if nested is None:
                return None
            pos = nested
        return pos
    raise AssertionError(kind)  # pragma: no cover - every kind was checked above


def encode_command(*args: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings (what redis clients send)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else bytes(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _decode_args(request: bytes) -> list[bytes]:
    # Our own requests only: an array of bulk strings.
    lines = request.split(b"\r\n")
    return [lines[i] for i in range(2, len(lines) - 1, 2)]


@dataclass(frozen=True)
class RESP(Exchange):
    """Redis commands.  By default each connection cycles PING, SET key value, GET key (keys
    unique per connection, so concurrent connections never see each other's values) and
    expects ``+PONG``, ``+OK`` and the value back.  ``commands`` fixes the commands instead,
    each with its raw expected reply in ``replies`` (None: any reply that is not an error)."""

    name: ClassVar[str] = "redis"
    # Redis answers an unparsable request with "-ERR Protocol error" and closes, a line it
    # cannot run with "-ERR unknown command", and waits for the rest of a partial inline one.
    default_garbage_answers: ClassVar[frozenset[str] | None] = frozenset(
        {"close", "error", "nothing"}
    )

    commands: Sequence[Sequence[str | bytes]] = ()
    replies: Sequence[bytes | None] = ()
    key_prefix: str = "multiconn"

    def __post_init__(self) -> None:
        commands = tuple(tuple(c) for c in self.commands)
        for c in commands:
            if not c:
                raise ValueError("commands must not contain an empty command")
        replies = tuple(None if r is None else check_bytes(r, "replies[]") for r in self.replies)
        if replies and len(replies) != len(commands):
            raise ValueError(
                f"replies must match commands one for one ({len(replies)} != {len(commands)})"
            )
        object.__setattr__(self, "commands", commands)
        object.__setattr__(self, "replies", replies)

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        check_count(count, "count")
        if self.commands:
            return [encode_command(*self.commands[i % len(self.commands)]) for i in range(count)]
        token = rng.randbytes(6).hex()
        out = []
        for i in range(count):
            key = f"{self.key_prefix}:{token}:{i // 3}"
            step = i % 3
            if step == 0:
                out.append(encode_command("PING"))
            elif step == 1:
                out.append(encode_command("SET", key, self._value(key.encode())))
            else:
                out.append(encode_command("GET", key))
        return out

    @staticmethod
    def _value(key: bytes) -> bytes:
        # Derived from the key, so GET's expected reply needs no state.
        return b"value-of-" + key

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        return resp_length(buf)

    def expected(self, request: bytes) -> bytes | None:
        if self.commands:
            index = [encode_command(*c) for c in self.commands].index(request)
            return self.replies[index] if self.replies else None
        args = _decode_args(request)
        verb = args[0].upper()
        if verb == b"PING":
            return b"+PONG\r\n"
        if verb == b"SET":
            return b"+OK\r\n"
        if verb == b"GET":
            return _bulk(self._value(args[1]))
        return None  # pragma: no cover - we only send the three

    def check(self, request: bytes, reply: bytes) -> str | None:
        if self.expected(request) is None and reply.startswith(b"-"):
            return f"error reply {reply[:80]!r}"
        return super().check(request, reply)

    def early_problem(self, request: bytes, partial: bytes) -> str | None:
        """An error reply where any other was expected, or bytes that differ from the
        expected reply, are wrong whatever follows."""
        want = self.expected(request)
        if want is None:
            return f"error reply {partial[:80]!r}" if partial.startswith(b"-") else None
        return prefix_problem(want, partial)

    def flood(self, rng: random.Random) -> Flood | None:
        # One 1 KiB value, then GETs of it: about 40 bytes asked, 1 KiB answered.
        if self.commands:
            return None
        key = f"{self.key_prefix}:flood:{rng.randbytes(6).hex()}"
        value = b"v" * FLOOD_VALUE
        return Flood((encode_command("SET", key, value),), encode_command("GET", key),
                     len(_bulk(value)))

    def is_error_reply(self, reply: bytes) -> bool:
        return reply.startswith(b"-")
