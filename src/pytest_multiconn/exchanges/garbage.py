"""What a server did with garbage, and whether its protocol allows that.

One judgement shared by the ``Garbage`` client fault and the suite's garbage row, so both
send the same kind of bytes, name an answer the same way and refuse the same exchanges.
An exchange says what a server of its protocol may answer to bytes that are not a request
(:meth:`~pytest_multiconn.exchanges.Exchange.garbage_answers`, a subset of
:data:`~pytest_multiconn.exchanges.GARBAGE_ANSWERS`): ``"echo"`` (every byte back),
``"close"`` (EOF or a reset), ``"error"`` (the protocol's error reply, as
:meth:`~pytest_multiconn.exchanges.Exchange.is_error_reply` tells) or ``"nothing"`` (no answer
for a while, the connection left open).
"""

from __future__ import annotations

import random

from pytest_multiconn.exchanges.base import GARBAGE_ANSWERS, Exchange

#: Seconds without an answer that count as "nothing" where the protocol allows it.
QUIET = 0.5

#: How much of an unexpected answer a verdict shows.
SHOWN = 40


def garbage_bytes(rng: random.Random, size: int) -> bytes:
    """``size`` bytes of garbage for a protocol that does not echo: a NUL, random bytes (every
    byte value), then a blank line (``\\r\\n\\r\\n``), so a line-based parser decides instead
    of waiting for the rest of a line."""
    tail = b"\r\n\r\n"
    body = max(size - 1 - len(tail), 0)
    return bytes([0]) + rng.randbytes(body) + tail


def classify_answer(exchange: Exchange, first: bytes | None) -> str:
    """Name what the server did: ``first`` is the first bytes it sent back, ``b""`` when it
    closed (or reset) the connection, None when nothing came in time."""
    if first is None:
        return "nothing"
    if first == b"":
        return "close"
    if exchange.is_error_reply(first):
        return "error"
    return f"reply {first[:SHOWN]!r}"


def answer_problem(exchange: Exchange, answer: str) -> str | None:
    """None when ``answer`` (from :func:`classify_answer`) is one the exchange allows; else
    what is wrong, naming what a server of the protocol may answer."""
    answers = exchange.garbage_answers() or frozenset()
    if answer in answers:
        return None
    return (
        f"answered garbage with {answer}; a {exchange.name} server may answer "
        f"{', '.join(sorted(answers)) or 'nothing it knows'}"
    )


def no_garbage_answers(exchange: Exchange, what: str) -> str | None:
    """Why garbage cannot be sent with ``exchange`` (None: it says what a server may answer).

    ``what`` names the caller in the message (``"the Garbage fault"``, ``"the garbage row"``).
    """
    if exchange.garbage_answers():
        return None
    return (
        f"{what} needs to know what a server may answer to garbage, and the {exchange.name} "
        f"exchange ({type(exchange).__name__}) does not say: give it garbage answers (a subset "
        f"of {', '.join(sorted(GARBAGE_ANSWERS))}), for example "
        "Lines(answers_garbage={'close', 'error'}, error_prefix=b'ERR') (Exact, "
        "LengthPrefixed and Framed take the same two), or a subclass with "
        "default_garbage_answers = frozenset({'close'}) (or garbage_answers() overridden)"
    )
