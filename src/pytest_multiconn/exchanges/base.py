"""What one client sends and how to tell that the reply is complete and right.

An :class:`Exchange` is sans-IO: it makes request bytes, finds where one reply ends in the
bytes received so far (``frame``), and judges a complete reply (``check``).  Clients, the
fault-injection suite and the scripted server drive it; it never touches a socket.

Pipelining is part of the model: N requests go out in one write and N replies are expected
back, in order; :class:`ReplyReader` splits the incoming stream into those replies.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from pytest_multiconn.core.checks import check_count

#: What a server may answer when it receives bytes that are not a request of its protocol.
GARBAGE_ANSWERS = frozenset({"echo", "close", "error", "nothing"})

#: Bytes of context shown on each side of the first differing byte.
EXCERPT = 16


class ReplyFramer(Protocol):
    """A user's framing rule: how many bytes of ``buf`` make one complete reply, or None
    when more bytes are needed (``eof``: the peer closed, nothing more will come)."""

    def __call__(self, buf: bytes, eof: bool) -> int | None: ...


class ReplyChecker(Protocol):
    """A user's judge: None when ``reply`` is a right answer to ``request``, else why not."""

    def __call__(self, request: bytes, reply: bytes) -> str | None: ...


def _excerpt(data: bytes, at: int) -> str:
    start = max(0, at - EXCERPT)
    end = at + EXCERPT
    head = "..." if start else ""
    tail = "..." if end < len(data) else ""
    return f"{head}{data[start:end]!r}{tail}"


def first_difference(expected: bytes, got: bytes) -> int | None:
    """The offset of the first byte where ``got`` differs from ``expected`` (a length
    difference counts at the shorter length); None when they are equal."""
    if expected == got:
        return None
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return i
    return min(len(expected), len(got))


def describe_difference(expected: bytes, got: bytes) -> str:
    """``"first differing byte at 3: expected ...b'HELLO' got ...b'hello'"`` (empty if equal)."""
    at = first_difference(expected, got)
    if at is None:
        return ""
    return (
        f"first differing byte at {at} (expected {len(expected)} B, got {len(got)} B): "
        f"expected {_excerpt(expected, at)}, got {_excerpt(got, at)}"
    )


def prefix_problem(want: bytes | None, partial: bytes) -> str | None:
    """Why ``partial`` cannot be the start of exactly ``want`` (None: it can, or no ``want``)."""
    if want is None or want[: len(partial)] == partial[: len(want)]:
        return None
    return describe_difference(want, partial)


@dataclass(frozen=True)
class ReplyOutcome:
    """One reply judged: which request (0-based index on its connection) it answers."""

    index: int
    request: bytes
    reply: bytes
    expected: bytes | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        what = f"reply {self.index} to {_excerpt(self.request, 0)}"
        return f"{what}: ok" if self.ok else f"{what}: {self.problem}"


class Exchange:
    """Base of every exchange.  Subclasses are frozen dataclasses validated in
    ``__post_init__``; they override ``requests``, ``frame`` and ``expected`` (or ``check``)."""

    #: The name used by ``--protocol`` and in reports.
    name: ClassVar[str] = "exchange"
    #: What a server of this protocol may answer to garbage; None: unknown, so the Garbage
    #: fault and the suite's garbage row do not apply.
    default_garbage_answers: ClassVar[frozenset[str] | None] = None
    #: Whether "after the client's half-close the server answers what it has, then closes" is
    #: part of the protocol (a contract) or only an observation.
    half_close_defined: ClassVar[bool] = False

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        """``count`` requests for one connection; ``size`` is a hint for protocols whose
        request size is free (echo, lines); every random choice comes from ``rng``."""
        raise NotImplementedError

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        """How many bytes at the start of ``buf`` make the complete reply to ``request``;
        None when more are needed.  ``eof``: the server closed (some replies end there)."""
        raise NotImplementedError

    def expected(self, request: bytes) -> bytes | None:
        """The exact reply to ``request``, when there is one (None: ``check`` decides)."""
        return None

    def check(self, request: bytes, reply: bytes) -> str | None:
        """None when ``reply`` is right for ``request``; else what is wrong, with bytes."""
        want = self.expected(request)
        if want is None or want == reply:
            return None
        return describe_difference(want, reply)

    def early_problem(self, request: bytes, partial: bytes) -> str | None:
        """What is already certainly wrong with ``partial``, the start of a reply that is not
        complete yet; None when nothing is, or the exchange cannot tell before the end.

        The reader then judges the reply at once instead of waiting for its rest (or for
        the timeout, when the rest never comes).  The default knows it where ``check`` is
        the exact comparison with ``expected``: at the first differing byte.
        """
        if type(self).check is not Exchange.check:
            return None
        return prefix_problem(self.expected(request), partial)

    def keeps_open(self, request: bytes, reply: bytes) -> bool:
        """Whether another request may follow on the connection after this reply."""
        return True

    def garbage_answers(self) -> frozenset[str] | None:
        """What a server may answer to garbage (a subset of :data:`GARBAGE_ANSWERS`), or None
        when the exchange does not say: then garbage is not sent at all."""
        return self.default_garbage_answers

    def is_error_reply(self, reply: bytes) -> bool:
        """Whether ``reply`` (to garbage) is this protocol's error reply."""
        return False

    def describe(self) -> str:
        return self.name

    def flood(self, rng: random.Random) -> Flood | None:
        """Requests that make a big reply for a small request, for the never-reader check
        (None: the check pipelines ordinary requests)."""
        return None


@dataclass(frozen=True)
class Flood:
    """``setup`` requests (sent and answered first), then ``request`` again and again: each
    answer is about ``reply_size`` bytes."""

    setup: tuple[bytes, ...]
    request: bytes
    reply_size: int


def check_size(size: object, name: str = "size") -> int | None:
    if size is None:
        return None
    return check_count(size, name, minimum=1)


def check_bytes(value: object, name: str, *, empty: bool = False) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes (or str), got {type(value).__name__}: {value!r}")
    data = bytes(value)
    if not data and not empty:
        raise ValueError(f"{name} must not be empty")
    return data


def check_garbage_answers(
    value: object, *, error_prefix: bytes | None = None, owner: str = "exchange"
) -> frozenset[str]:
    """The ``answers_garbage`` parameter of an exchange, validated: a subset of
    :data:`GARBAGE_ANSWERS`; ``"error"`` only where the exchange can tell an error reply
    (``error_prefix`` given), since an answer it cannot recognise would never match."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}: answers_garbage must be a set of strings such as "
                        f"{{'close', 'error'}}, got {value!r}")
    answers = frozenset(value)
    if not answers <= GARBAGE_ANSWERS:
        raise ValueError(
            f"{owner}: answers_garbage must be a subset of {sorted(GARBAGE_ANSWERS)}, "
            f"got {sorted(map(str, answers))}"
        )
    if "error" in answers and error_prefix is None:
        raise ValueError(
            f"{owner}: answers_garbage has 'error', but nothing tells an error reply: give "
            "error_prefix= too (the bytes an error reply starts with, e.g. b'ERR')"
        )
    return answers


#: The first window :meth:`ReplyReader._frame` shows a framer.
_FRAME_WINDOW = 4096


class ReplyReader:
    """Splits the bytes one connection receives into replies to ``requests``, in order.

    ``feed(data)`` returns the replies it completed; ``eof()`` the ones the close completed
    (and marks the rest as missing).  ``outcomes`` keeps every judged reply.
    """

    def __init__(self, exchange: Exchange, requests: Sequence[bytes]) -> None:
        self.exchange = exchange
        self.requests = list(requests)
        self.buffer = bytearray()
        self.outcomes: list[ReplyOutcome] = []
        self.closed_after: int | None = None  # index of the reply after which it said "close"
        self.received = 0

    @property
    def next_index(self) -> int:
        return len(self.outcomes)

    @property
    def complete(self) -> bool:
        return len(self.outcomes) >= len(self.requests)

    @property
    def ok(self) -> bool:
        return self.complete and all(o.ok for o in self.outcomes) and not self.extra

    @property
    def extra(self) -> int:
        """Bytes received after the last expected reply."""
        return len(self.buffer) if self.complete else 0

    def _frame(self, request: bytes, data: bytes, pos: int, eof: bool) -> int | None:
        """``exchange.frame`` on the bytes from ``pos``, shown a window that grows (4x) only
        while the reply does not fit in it: framing a reply costs about its own size, not
        the whole buffer's (9 MiB of pipelined 1 KiB echoes took seconds when every reply
        copied the 64 KiB behind it).  A ValueError (unparsable) is only believed once the
        window holds everything."""
        rest = len(data) - pos
        window = min(rest, _FRAME_WINDOW)
        for _ in range(64):
            last = window >= rest
            try:
                size = self.exchange.frame(request, data[pos : pos + window], eof and last)
            except ValueError:
                if last:
                    raise
                window = min(rest, window * 4)
                continue
            if size is None and not last:
                window = min(rest, window * 4)
                continue
            return size
        return self.exchange.frame(request, data[pos:], eof)  # pragma: no cover - 4**64

    def _take(self, eof: bool) -> list[ReplyOutcome]:
        done: list[ReplyOutcome] = []
        data = bytes(self.buffer)  # one copy per feed; replies are cut at offsets into it
        pos = 0
        try:
            while not self.complete and (pos < len(data) or eof):
                request = self.requests[self.next_index]
                try:
                    size = self._frame(request, data, pos, eof)
                except ValueError as exc:
                    rest = data[pos:]
                    if not rest:
                        break  # closed with nothing of this reply: missing, not unparsable
                    outcome = ReplyOutcome(self.next_index, request, rest,
                                           self.exchange.expected(request),
                                           f"unparsable reply: {exc}")
                    pos = len(data)
                    self.outcomes.append(outcome)
                    done.append(outcome)
                    break
                if size is None:
                    if pos < len(data) and not eof:
                        early = self._judge_early(request, data[pos:])
                        if early is not None:
                            pos = len(data)
                            done.append(early)
                    break
                reply = data[pos : pos + size]
                pos += size
                outcome = ReplyOutcome(
                    self.next_index,
                    request,
                    reply,
                    self.exchange.expected(request),
                    self.exchange.check(request, reply),
                )
                self.outcomes.append(outcome)
                done.append(outcome)
                if not self.exchange.keeps_open(request, reply):
                    self.closed_after = outcome.index
                    break
                if eof and size == 0:
                    break
        finally:
            del self.buffer[:pos]
        return done

    def _judge_early(self, request: bytes, partial: bytes) -> ReplyOutcome | None:
        """The outcome of a reply already known to be wrong before it is complete (None:
        not known yet); it takes every byte received, since the stream cannot be trusted."""
        why = self.exchange.early_problem(request, partial)
        if why is None:
            return None
        outcome = ReplyOutcome(
            self.next_index,
            request,
            partial,
            self.exchange.expected(request),
            f"{why} (judged on its first {len(partial)} B, before the reply was complete)",
        )
        self.buffer.clear()
        self.outcomes.append(outcome)
        return outcome

    def feed(self, data: bytes) -> list[ReplyOutcome]:
        self.received += len(data)
        self.buffer += data
        return self._take(eof=False)

    def eof(self) -> list[ReplyOutcome]:
        return self._take(eof=True)

    def first_problem(self) -> str | None:
        """The first thing wrong, in words (None when every reply came and was right)."""
        for outcome in self.outcomes:
            if not outcome.ok:
                return str(outcome)
        if not self.complete:
            missing = len(self.requests) - len(self.outcomes)
            partial = f"; {len(self.buffer)} B of a partial reply" if self.buffer else ""
            want = self.exchange.expected(self.requests[self.next_index])
            shown = "" if want is None else f" (expected {_excerpt(want, 0)}"
            if shown and self.buffer:
                shown += f", got {_excerpt(bytes(self.buffer), 0)}"
            shown += ")" if shown else ""
            return (
                f"{missing} of {len(self.requests)} replies missing, first: reply "
                f"{self.next_index}{shown}{partial}"
            )
        if self.extra:
            extra = _excerpt(bytes(self.buffer), 0)
            return f"{self.extra} B more than the expected replies: {extra}"
        return None
