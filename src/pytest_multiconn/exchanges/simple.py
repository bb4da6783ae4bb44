"""Exchanges with no dependency: echo, exact bytes, lines, length prefixes, a user's framer."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from pytest_multiconn.core.checks import check_count
from pytest_multiconn.exchanges.base import (
    Exchange,
    ReplyChecker,
    ReplyFramer,
    check_bytes,
    check_garbage_answers,
    check_size,
)

#: Request size when neither the exchange nor the caller names one.
DEFAULT_SIZE = 64

_PRINTABLE = bytes(range(0x21, 0x7F))


@dataclass(frozen=True)
class Echo(Exchange):
    """The server sends back every byte it received: today's behaviour, and the default.

    Requests are ``size`` random bytes (every byte value), or the fixed ``messages``.
    """

    name: ClassVar[str] = "echo"
    default_garbage_answers: ClassVar[frozenset[str] | None] = frozenset({"echo"})
    half_close_defined: ClassVar[bool] = True

    size: int | None = None
    messages: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        check_size(self.size)
        object.__setattr__(
            self, "messages", tuple(check_bytes(m, "messages[]") for m in self.messages)
        )

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        check_count(count, "count")
        if self.messages:
            return [self.messages[i % len(self.messages)] for i in range(count)]
        n = check_size(size) or self.size or DEFAULT_SIZE
        return [rng.randbytes(n) for _ in range(count)]

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        return len(request) if len(buf) >= len(request) else None

    def expected(self, request: bytes) -> bytes:
        return request


@dataclass(frozen=True)
class _SaysGarbageAnswers(Exchange):
    """The two keyword-only parameters by which a user says what their server answers to
    garbage (the ``Garbage`` fault and the suite's garbage row are refused without them).

    ``answers_garbage``: a subset of :data:`GARBAGE_ANSWERS` (``{"close", "error"}`` for a
    server that answers an error line and hangs up); ``error_prefix``: the bytes an error
    reply starts with (``b"ERR"``, ``b"-"``), needed for ``"error"``.
    """

    answers_garbage: frozenset[str] = field(default=frozenset(), kw_only=True)
    error_prefix: bytes | None = field(default=None, kw_only=True)

    def _check_garbage(self) -> None:
        # Called by each subclass's __post_init__ (a dataclass calls only the most derived).
        if self.error_prefix is not None:
            object.__setattr__(self, "error_prefix",
                               check_bytes(self.error_prefix, "error_prefix"))
        object.__setattr__(self, "answers_garbage", check_garbage_answers(
            self.answers_garbage, error_prefix=self.error_prefix, owner=type(self).__name__))

    def garbage_answers(self) -> frozenset[str] | None:
        return self.answers_garbage or self.default_garbage_answers

    def is_error_reply(self, reply: bytes) -> bool:
        return self.error_prefix is not None and reply.startswith(self.error_prefix)


@dataclass(frozen=True)
class Exact(_SaysGarbageAnswers):
    """Send ``send``; the reply is exactly ``expect`` (framed by its length)."""

    name: ClassVar[str] = "exact"

    send: bytes
    expect: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "send", check_bytes(self.send, "send"))
        object.__setattr__(self, "expect", check_bytes(self.expect, "expect"))
        self._check_garbage()

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        return [self.send] * check_count(count, "count")

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        return len(self.expect) if len(buf) >= len(self.expect) else None

    def expected(self, request: bytes) -> bytes:
        return self.expect


def _identity(line: bytes) -> bytes:
    return line


@dataclass(frozen=True)
class Lines(_SaysGarbageAnswers):
    """Line-delimited: each request is one line; each reply is one line.

    ``reply(line)`` says what the server answers to a line (delimiter stripped, added back);
    the default is the line itself (a line echo server), ``bytes.upper`` an uppercasing one.
    ``expect`` fixes the reply instead.  ``terminator`` makes a reply span lines up to and
    including it (memcached's ``get``: ``VALUE k 0 5\r\nhello\r\nEND\r\n`` ends at
    ``END\r\n``); ``expect`` is then the whole reply, terminator included.  ``send`` fixes
    the request line; otherwise requests are random printable lines of ``size`` bytes.
    """

    name: ClassVar[str] = "line"
    half_close_defined: ClassVar[bool] = True

    reply: Callable[[bytes], bytes] = _identity
    send: bytes | None = None
    expect: bytes | None = None
    delimiter: bytes = b"\n"
    size: int | None = None
    #: Longest reply line accepted before the reply counts as unframed.
    max_line: int = 1024 * 1024
    terminator: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "delimiter", check_bytes(self.delimiter, "delimiter"))
        if self.terminator is not None:
            object.__setattr__(self, "terminator", check_bytes(self.terminator, "terminator"))
        if self.send is not None:
            send = check_bytes(self.send, "send")
            if send.endswith(self.delimiter):
                send = send[: -len(self.delimiter)]
            if self.delimiter in send:
                raise ValueError(f"send must be one line, got {send!r}")
            object.__setattr__(self, "send", send)
        if self.expect is not None and self.terminator is not None:
            expect = check_bytes(self.expect, "expect")
            if not expect.endswith(self.terminator):
                raise ValueError(f"expect must end with the terminator {self.terminator!r}, "
                                 f"got {expect!r}")
            object.__setattr__(self, "expect", expect)
        elif self.expect is not None:
            expect = check_bytes(self.expect, "expect", empty=True)
            if expect.endswith(self.delimiter):
                expect = expect[: -len(self.delimiter)]
            object.__setattr__(self, "expect", expect)
        if not callable(self.reply):
            raise TypeError(f"reply must be a callable bytes -> bytes, got {self.reply!r}")
        check_size(self.size)
        check_size(self.max_line, "max_line")
        self._check_garbage()

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        check_count(count, "count")
        if self.send is not None:
            return [self.send + self.delimiter] * count
        n = check_size(size) or self.size or DEFAULT_SIZE
        alphabet = bytes(b for b in _PRINTABLE if b not in self.delimiter)
        return [bytes(rng.choices(alphabet, k=n)) + self.delimiter for _ in range(count)]

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        end = self.delimiter if self.terminator is None else self.terminator
        at = buf.find(end)
        if at >= 0:
            return at + len(end)
        if len(buf) > self.max_line:
            raise ValueError(f"no {end!r} in the first {len(buf)} B")
        return None

    def expected(self, request: bytes) -> bytes | None:
        if self.terminator is not None:
            return self.expect
        if self.expect is not None:
            return self.expect + self.delimiter
        return bytes(self.reply(request[: -len(self.delimiter)])) + self.delimiter


@dataclass(frozen=True)
class LengthPrefixed(_SaysGarbageAnswers):
    """Binary frames: a ``prefix``-byte unsigned length (``byteorder``), then that many bytes.

    ``reply(payload)`` gives the reply payload (default: the payload itself, an echo of the
    frame).  Requests carry ``size`` random bytes (or the fixed ``send`` payload).
    """

    name: ClassVar[str] = "length"

    prefix: int = 4
    byteorder: str = "big"
    reply: Callable[[bytes], bytes] = _identity
    send: bytes | None = None
    size: int | None = None
    max_frame: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.prefix not in (1, 2, 4, 8) or isinstance(self.prefix, bool):
            raise ValueError(f"prefix must be 1, 2, 4 or 8 bytes, got {self.prefix!r}")
        if self.byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', got {self.byteorder!r}")
        if self.send is not None:
            object.__setattr__(self, "send", check_bytes(self.send, "send", empty=True))
        if not callable(self.reply):
            raise TypeError(f"reply must be a callable bytes -> bytes, got {self.reply!r}")
        check_size(self.size)
        check_size(self.max_frame, "max_frame")
        self._check_garbage()

    def pack(self, payload: bytes) -> bytes:
        """One frame carrying ``payload``."""
        return len(payload).to_bytes(self.prefix, self.byteorder) + payload  # type: ignore[arg-type]

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        check_count(count, "count")
        if self.send is not None:
            return [self.pack(self.send)] * count
        n = check_size(size) or self.size or DEFAULT_SIZE
        n = max(n - self.prefix, 0)
        return [self.pack(rng.randbytes(n)) for _ in range(count)]

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        if len(buf) < self.prefix:
            return None
        length = int.from_bytes(buf[: self.prefix], self.byteorder)  # type: ignore[arg-type]
        if length > self.max_frame:
            raise ValueError(f"frame length {length} exceeds max_frame {self.max_frame}")
        total = self.prefix + length
        return total if len(buf) >= total else None

    def expected(self, request: bytes) -> bytes:
        return self.pack(bytes(self.reply(request[self.prefix :])))


@dataclass(frozen=True)
class Framed(_SaysGarbageAnswers):
    """Your protocol, framed by your own rule: send ``send``; ``framer(buf, eof)`` returns how
    many bytes make one complete reply (None: not yet); the reply must equal ``expect`` or
    satisfy ``checker(request, reply)`` (None when right, else why not); with neither, any
    complete reply is right."""

    name: ClassVar[str] = "framed"

    send: bytes
    framer: ReplyFramer
    expect: bytes | None = None
    checker: ReplyChecker | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "send", check_bytes(self.send, "send"))
        if not callable(self.framer):
            raise TypeError(f"framer must be callable (buf, eof) -> int | None: {self.framer!r}")
        if self.expect is not None:
            object.__setattr__(self, "expect", check_bytes(self.expect, "expect", empty=True))
        if self.checker is not None and not callable(self.checker):
            raise TypeError(f"checker must be callable (request, reply), got {self.checker!r}")
        self._check_garbage()

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        return [self.send] * check_count(count, "count")

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        size = self.framer(buf, eof)
        if size is None:
            return None
        return check_count(size, f"the framer's result for a {len(buf)} B buffer",
                           maximum=len(buf))

    def expected(self, request: bytes) -> bytes | None:
        return self.expect

    def check(self, request: bytes, reply: bytes) -> str | None:
        if self.checker is not None:
            return self.checker(request, reply)
        return super().check(request, reply)


def matching(pattern: str | bytes) -> ReplyChecker:
    """A checker accepting replies that match the regular expression ``pattern``."""
    rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.DOTALL)

    def check(request: bytes, reply: bytes) -> str | None:
        if rx.fullmatch(reply):
            return None
        return f"reply {reply[:64]!r} does not match {rx.pattern!r}"

    return check
