"""Runs the client suite's rows: one fresh proxy per row, the user's call once per scenario
(twice for stale_connection), each call bounded by the suite itself.

A row is a *program*: a generator that sets up its scene, yields the address to call, gets
the call's :class:`Outcome` back, and returns its :class:`SuiteRow`.  The blocking driver runs
each call in a daemon thread it stops waiting for after ``patience`` seconds (the thread is
abandoned; stopping the row's proxy cuts its connections, so a client blocked in ``recv()``
returns); the async driver runs each call in a task under an anyio cancel scope, and the
programs' own blocking steps (proxy start, waits) in worker threads.  One program, two
drivers: the sync and async suites judge alike.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.suite.client.outcome import HUNG, RAISED, RETURNED, Outcome, short
from pytest_multiconn.suite.client.rows import (
    ROWS,
    Plan,
    Row,
    Verdict,
    judge,
    judge_stale,
)
from pytest_multiconn.suite.client.scene import Scene, Wire, calibrate
from pytest_multiconn.suite.client.toxics import Recorder
from pytest_multiconn.suite.model import NA, SuiteRow

Program = Generator[Any, Outcome, tuple[SuiteRow, Wire | None]]


@dataclass(frozen=True)
class Setup:
    """The run's fixed inputs (``upstream``: the address of the server behind the proxy)."""

    upstream: Any
    seed: int


def _row(row: Row, plan: Plan, verdict: Verdict, *, started: float, wire: Wire | None = None,
         outcomes: Sequence[Outcome] = (), executions: int | None = None,
         faults: Sequence[str] = ()) -> SuiteRow:
    measurements: dict[str, Any] = {
        "cause": row.cause(plan),
        "timeout": plan.timeout,
        "bound": plan.bound,
        "faults": list(faults),
    }
    for i, outcome in enumerate(outcomes):
        prefix = "" if len(outcomes) == 1 else f"call{i + 1}_"
        measurements[f"{prefix}outcome"] = outcome.kind
        measurements[f"{prefix}seconds"] = round(outcome.seconds, 4)
        if outcome.returned:
            measurements[f"{prefix}value"] = short(outcome.value, 200)
        elif outcome.raised:
            measurements[f"{prefix}error"] = short(
                f"{type(outcome.error).__name__}: {outcome.error}", 200)
    if executions is not None:
        measurements["executions"] = executions
    transcript = wire.transcript if wire is not None else ()
    return SuiteRow(
        fault=row.name,
        connections=wire.connections if wire is not None else 0,
        bytes=wire.size if wire is not None else 0,
        passed=verdict.passed,
        seconds=time.monotonic() - started,
        detail=verdict.detail,
        status=verdict.status,
        measurements=measurements,
        transcript=transcript,
    )


def program(row: Row, plan: Plan, setup: Setup) -> Program:
    """The scenario of ``row``: yields addresses to call, returns the row (and the wire)."""
    started = time.monotonic()
    if row.contract == "tls":
        why = ("no TLS here: the client speaks plaintext (a stalled handshake applies to TLS "
               "clients)")
        return _row(row, plan, Verdict(NA, why), started=started), None
    if row.contract == "refused":
        with socket.socket() as idle:
            idle.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused
            outcome = yield idle.getsockname()
        verdict = judge(row, plan, outcome, 0)
        return _row(row, plan, verdict, started=started, outcomes=(outcome,)), None
    recorder = Recorder(plan.exchange, plan.calibration.key)
    faults = row.faults(plan, recorder)
    scene = Scene(plan.exchange, setup.upstream, faults, setup.seed, row.name, recorder)
    shown = [f"{toxic!r} {direction}" for toxic, direction in faults]
    try:
        address = scene.start()
        if row.contract == "stale":
            first = yield address
            kept = scene.live()
            second: Outcome | None = None
            executions = 0
            if first.returned and kept:
                before = scene.wire().count(plan.exchange, plan.calibration.key)
                scene.close_connections()
                second = yield address
                executions = scene.wire().count(plan.exchange, plan.calibration.key) - before
            wire = scene.wire()
            verdict = judge_stale(plan, first, second, kept=kept, executions=executions,
                                  connections=wire.connections)
            outcomes = (first,) if second is None else (first, second)
            return _row(row, plan, verdict, started=started, wire=wire, outcomes=outcomes,
                        executions=executions, faults=shown), wire
        outcome = yield address
        wire = scene.wire()
    finally:
        scene.stop()
    executions = wire.count(plan.exchange, plan.calibration.key)
    verdict = judge(row, plan, outcome, executions)
    return _row(row, plan, verdict, started=started, wire=wire, outcomes=(outcome,),
                executions=executions, faults=shown), wire


# -- calls ------------------------------------------------------------------------------------


def call_bounded(call: Callable[[Any], Any], address: SocketAddress, patience: float) -> Outcome:
    """``call(address)`` in a daemon thread, waited for at most ``patience`` seconds."""
    box: list[Outcome] = []
    started = time.monotonic()

    def run() -> None:
        try:
            value = call(address)
        except BaseException as exc:  # noqa: BLE001 - whatever the client raised is the outcome
            box.append(Outcome(RAISED, time.monotonic() - started, error=exc))
        else:
            box.append(Outcome(RETURNED, time.monotonic() - started, value=value))

    worker = threading.Thread(target=run, name="multiconn-client-call", daemon=True)
    worker.start()
    worker.join(patience)
    if box:
        return box[0]
    return Outcome(HUNG, time.monotonic() - started)


async def acall_bounded(acall: Callable[[Any], Awaitable[Any]], address: SocketAddress,
                        patience: float) -> Outcome:
    """``await acall(address)`` under a cancel scope of ``patience`` seconds (anyio)."""
    import anyio

    started = time.monotonic()
    with anyio.move_on_after(patience) as scope:
        try:
            value = await acall(address)
        except Exception as exc:  # noqa: BLE001 - whatever the client raised is the outcome
            return Outcome(RAISED, time.monotonic() - started, error=exc)
    if scope.cancelled_caught:
        return Outcome(HUNG, time.monotonic() - started)
    return Outcome(RETURNED, time.monotonic() - started, value=value)


# -- drivers ----------------------------------------------------------------------------------


def _step(gen: Program, sent: Outcome | None) -> tuple[bool, Any]:
    """One step of a program: (False, address to call) or (True, its result)."""
    try:
        return False, (next(gen) if sent is None else gen.send(sent))
    except StopIteration as stop:
        return True, stop.value


def drive(gen: Program, call: Callable[[Any], Any], patience: float
          ) -> tuple[SuiteRow, Wire | None]:
    try:
        done, value = _step(gen, None)
        while not done:
            done, value = _step(gen, call_bounded(call, value, patience))
        return value  # type: ignore[no-any-return]
    finally:
        gen.close()


async def adrive(gen: Program, acall: Callable[[Any], Awaitable[Any]], patience: float
                 ) -> tuple[SuiteRow, Wire | None]:
    from pytest_multiconn.core.blocking import to_thread

    try:
        done, value = await to_thread(_step, gen, None)
        while not done:
            outcome = await acall_bounded(acall, value, patience)
            done, value = await to_thread(_step, gen, outcome)
        return value  # type: ignore[no-any-return]
    finally:
        await to_thread(gen.close)


# -- the run ----------------------------------------------------------------------------------


def selected(only: Sequence[str], skip: Sequence[str]) -> list[Row]:
    names = [r.name for r in ROWS]
    for name in [*only, *skip]:
        if name not in names:
            raise ValueError(f"no client-suite row {name!r}; the rows are: {', '.join(names)}")
    return [r for r in ROWS if (not only or r.name in only) and r.name not in skip]


def calibrated(plan: Plan, wire: Wire | None) -> Plan:
    return replace(plan, calibration=calibrate(plan.exchange, wire)) if wire else plan


__all__ = [
    "Program",
    "Setup",
    "acall_bounded",
    "adrive",
    "calibrated",
    "call_bounded",
    "drive",
    "program",
    "selected",
]
