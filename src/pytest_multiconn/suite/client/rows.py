"""The rows of the client suite: for each, the fault (toxics on the proxy, built from what
the baseline showed), its cause in words, and the rule that judges the call.

Contracts:

* ``result``: the call returns the right result (baseline, sliced, coalesced, latency_within);
* ``bounded``: the call raises within the client's timeout plus a stated margin (latency_beyond,
  the stalls, blackhole); the row says how long it really took;
* ``raises``: the call raises, and never returns a wrong or partial value (the resets, a cut
  reply, garbage);
* ``lost``: the server executed the request, its reply is lost once (the first connection);
  a non-idempotent request must not reach the server again;
* ``stale``: the server closed the kept-alive connection right after its reply: the next
  call succeeds, and does not execute a non-idempotent request twice;
* ``refused``: nothing listens: the call raises within the bound;
* ``note``: an observation (a flipped bit, which a plaintext protocol cannot detect);
* ``tls``: TLS only (a stalled handshake): n/a for a plaintext client.

Every row also fails when a non-idempotent request reached the server more than once
("re-sent a non-idempotent request: the server executed it 2 times").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_multiconn.exchanges import Exchange
from pytest_multiconn.exchanges.resp import RESP
from pytest_multiconn.proxy import (
    Coalesce,
    Corrupt,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
)
from pytest_multiconn.suite.client.framing import garbage_for
from pytest_multiconn.suite.client.outcome import Outcome, describe_expect, matches, short
from pytest_multiconn.suite.client.scene import Calibration
from pytest_multiconn.suite.client.toxics import AtReply, FirstConnections, Garbage, Recorder
from pytest_multiconn.suite.model import FAIL, NA, NOTE, PASS

#: Gap between the one-byte pieces of the sliced row.
SLICE_GAP_US = 1000.0


@dataclass(frozen=True)
class Plan:
    """Everything a row is built and judged from."""

    exchange: Exchange
    expect: Any
    idempotent: bool
    timeout: float
    margin: float
    patience: float
    calibration: Calibration
    tls: bool = False

    @property
    def bound(self) -> float:
        return self.timeout + self.margin

    @property
    def beyond_ms(self) -> float:
        """The latency of latency_beyond: twice the bound (a client without a timeout
        returns after it, and the row shows that)."""
        return 2e3 * self.bound


Faults = list[tuple[Toxic, str]]


@dataclass(frozen=True)
class Row:
    name: str
    contract: str
    cause: Callable[[Plan], str]
    faults: Callable[[Plan, Recorder], Faults]


def _none(plan: Plan, recorder: Recorder) -> Faults:
    return []


def _at_reply(make: Callable[[], Toxic]) -> Callable[[Plan, Recorder], Faults]:
    """``make()`` from the first byte of the reply to the request of interest."""
    return lambda plan, rec: [(AtReply(make(), recorder=rec), "downstream")]


def _mid_reply(make: Callable[[], Toxic]) -> Callable[[Plan, Recorder], Faults]:
    """``make()`` from the middle of that reply (half of what the baseline's was)."""
    return lambda plan, rec: [(AtReply(make(), recorder=rec, skip=plan.calibration.half),
                               "downstream")]


def _stall() -> Toxic:
    return Timeout(ms=0, hold_eof=True)


def _reset() -> Toxic:
    return ResetPeer(timeout_ms=0, drop=True)


ROWS: tuple[Row, ...] = (
    Row("baseline", "result", lambda p: "no fault", _none),
    Row("sliced", "result",
        lambda p: f"the reply came 1 byte per write, {SLICE_GAP_US / 1e3:g} ms apart: a client "
                  "must read until the reply is complete, not take one read for the whole reply",
        lambda p, r: [(Slicer(average_size=1, delay_us=SLICE_GAP_US), "downstream")]),
    Row("coalesced", "result",
        lambda p: "the server's writes arrived held back and merged into one",
        lambda p, r: [(Coalesce(bytes=64 * 1024, timeout_ms=20), "downstream")]),
    Row("latency_within", "result",
        lambda p: f"every reply chunk delayed {0.3 * p.timeout:g} s, within the {p.timeout:g} s "
                  "timeout",
        lambda p, r: [(Latency(ms=300 * p.timeout), "downstream")]),
    Row("latency_beyond", "bounded",
        lambda p: f"the reply delayed {p.beyond_ms / 1e3:g} s, beyond the {p.timeout:g} s timeout",
        lambda p, r: [(AtReply(Latency(ms=p.beyond_ms), recorder=r), "downstream")]),
    Row("stall_before_reply", "bounded",
        lambda p: "the server got the request and never answered (connection left open)",
        _at_reply(_stall)),
    Row("stall_mid_reply", "bounded",
        lambda p: f"the reply stopped after {p.calibration.half} of "
                  f"{p.calibration.length} B (connection left open)",
        _mid_reply(_stall)),
    Row("stall_handshake", "tls", lambda p: "the TLS handshake stalled", _none),
    Row("blackhole", "bounded",
        lambda p: "the connection was accepted and nothing ever answered (the request never "
                  "reached the server)",
        lambda p, r: [(_stall(), "upstream"), (_stall(), "downstream")]),
    Row("reset_before_reply", "raises",
        lambda p: "the server executed the request, then the connection was reset before any "
                  "byte of the reply (on every connection)",
        _at_reply(_reset)),
    Row("reset_mid_reply", "raises",
        lambda p: f"the connection was reset after {p.calibration.half}"
                  f" of {p.calibration.length} B of the reply",
        _mid_reply(_reset)),
    Row("cut_reply", "raises",
        lambda p: f"the server closed (FIN) after {p.calibration.half} "
                  f"of {p.calibration.length} B of the reply",
        _mid_reply(lambda: LimitData(bytes=0))),
    Row("garbage_reply", "raises",
        lambda p: f"the reply was replaced by garbage "
                  f"{short(garbage_for(p.exchange, p.calibration.length), 40)}",
        lambda p, r: [(AtReply(Garbage(data=garbage_for(p.exchange, p.calibration.length)),
                               recorder=r), "downstream")]),
    Row("lost_reply", "lost",
        lambda p: "the server executed the request and its reply was lost (the connection "
                  "reset), on the first connection only",
        lambda p, r: [(FirstConnections(AtReply(_reset(), recorder=r)), "downstream")]),
    Row("stale_connection", "stale",
        lambda p: "the server closed the kept-alive connection right after its reply",
        _none),
    Row("refused", "refused", lambda p: "nothing listens at the address", _none),
    Row("corrupt_reply", "note",
        lambda p: f"one bit flipped in byte {p.calibration.half} of the "
                  "reply",
        _mid_reply(lambda: Corrupt(offsets=(0,)))),
)

ROW_NAMES: tuple[str, ...] = tuple(r.name for r in ROWS)


@dataclass(frozen=True)
class Verdict:
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != FAIL


def _garbage_detectable(exchange: Exchange) -> bool:
    return isinstance(exchange, RESP) or exchange.name == "http"


def _resent(plan: Plan, executions: int) -> str | None:
    if plan.idempotent or executions <= 1:
        return None
    return f"re-sent a non-idempotent request: the server executed it {executions} times"


def _late(plan: Plan, outcome: Outcome) -> str:
    if outcome.hung:
        return (f"still waiting after {outcome.seconds:.1f} s for a {plan.timeout:g} s timeout: "
                "abandoned (nothing bounds the call)")
    verb = "returned" if outcome.returned else f"raised {type(outcome.error).__name__}"
    return f"{verb} after {outcome.seconds:.1f} s for a {plan.timeout:g} s timeout"


def judge(row: Row, plan: Plan, outcome: Outcome, executions: int) -> Verdict:  # noqa: PLR0912 - one branch per contract
    """The verdict of ``row`` on the call's ``outcome`` (``executions``: how many times the
    request reached the server)."""
    cause = row.cause(plan)
    resent = _resent(plan, executions)
    bound = f"bound {plan.bound:g} s = timeout {plan.timeout:g} s + margin {plan.margin:g} s"
    right = outcome.returned and matches(plan.expect, outcome.value)
    wrong = outcome.returned and not right
    expected = describe_expect(plan.expect)
    problems: list[str] = []
    if row.contract == "result":
        if not right:
            problems.append(f"{outcome.told()}, expected {expected}")
    elif row.contract in ("bounded", "refused"):
        if wrong:
            problems.append(f"returned a wrong value {short(outcome.value)}")
        if not outcome.raised or outcome.seconds > plan.bound:
            problems.append(f"{_late(plan, outcome)} ({bound})")
    elif row.contract == "raises":
        if outcome.hung:
            problems.append(_late(plan, outcome))
        elif wrong:
            if row.name == "garbage_reply" and not _garbage_detectable(plan.exchange):
                return Verdict(NOTE, f"returned {short(outcome.value)} made of garbage: "
                                     f"{plan.exchange.name} cannot tell garbage ({cause})")
            problems.append(f"returned a wrong or partial value {short(outcome.value)} "
                            f"(expected {expected}) instead of raising")
    elif row.contract == "lost":
        if outcome.hung:
            problems.append(_late(plan, outcome))
        elif wrong:
            problems.append(f"returned a wrong value {short(outcome.value)} (expected "
                            f"{expected})")
    elif row.contract == "note":
        if outcome.hung:
            problems.append(_late(plan, outcome))
        else:
            seen = ("the flip went unnoticed and the value is right" if right else
                    "the flip was detected" if outcome.raised else
                    "a wrong value came back: a plaintext protocol cannot detect a flipped bit")
            return Verdict(NOTE, f"{outcome.told()}: {seen} ({cause})")
    if resent:
        problems.insert(0, resent)
    if problems:
        return Verdict(FAIL, f"{'; '.join(problems)}: {cause}")
    if row.contract == "lost" and right:
        return Verdict(PASS, f"{outcome.told()} (retried; the server executed it "
                             f"{executions} time{'s' if executions != 1 else ''})")
    return Verdict(PASS, outcome.told())


def judge_stale(plan: Plan, first: Outcome, second: Outcome | None, *, kept: int,
                executions: int, connections: int) -> Verdict:
    """The stale_connection verdict: ``first`` primed a connection (``kept`` were left open
    by the client), the server closed them, ``second`` is the next call."""
    row = next(r for r in ROWS if r.name == "stale_connection")
    cause = row.cause(plan)
    if not (first.returned and matches(plan.expect, first.value)):
        return Verdict(NA, f"the first call {first.told()}: no kept-alive connection to close")
    if not kept or second is None:
        return Verdict(NA, "the client kept no connection open after its call (make call() "
                           "reuse one client per address to test reuse)")
    problems = []
    resent = _resent(plan, executions)
    if resent:
        problems.append(resent)
    if not (second.returned and matches(plan.expect, second.value)):
        problems.append(f"the next call {second.told()}, expected {describe_expect(plan.expect)}")
    if second.hung:
        problems.append(_late(plan, second))
    if problems:
        return Verdict(FAIL, f"{'; '.join(problems)}: {cause}")
    return Verdict(PASS, f"the next call {second.told()} ({connections} connections)")


__all__ = ["ROWS", "ROW_NAMES", "Plan", "Row", "Verdict", "judge", "judge_stale"]
