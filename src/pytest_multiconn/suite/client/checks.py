"""The client suite's entry points: :func:`check_client` and :func:`acheck_client`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pytest_multiconn.core.address import Address, socket_address
from pytest_multiconn.core.checks import check_seconds, check_seed
from pytest_multiconn.core.seed import get_run_seed
from pytest_multiconn.errors import ContractBreak
from pytest_multiconn.exchanges import Exchange
from pytest_multiconn.suite.client.rows import ROW_NAMES, ROWS, Plan
from pytest_multiconn.suite.client.runner import (
    Setup,
    adrive,
    calibrated,
    drive,
    program,
    selected,
)
from pytest_multiconn.suite.client.scene import Calibration
from pytest_multiconn.suite.client.serve import serve
from pytest_multiconn.suite.model import SuiteReport, SuiteRow

CLIENT_ROW_NAMES = ROW_NAMES


def _prepare(exchange: Exchange, *, idempotent: bool, timeout: float, margin: float | None,
             patience: float | None, seed: int | None, only: Sequence[str],
             skip: Sequence[str]) -> tuple[Plan, int, list[Any]]:
    if not isinstance(exchange, Exchange):
        raise TypeError(f"exchange must be an Exchange such as RESP() or HTTP(), got {exchange!r}")
    if not isinstance(idempotent, bool):
        raise TypeError(f"idempotent must be True or False, got {idempotent!r}")
    timeout = check_seconds(timeout, "timeout")
    margin = max(0.5, timeout / 2) if margin is None else check_seconds(margin, "margin")
    patience = (
        (timeout + margin + 10.0) if patience is None else check_seconds(patience, "patience")
    )
    patience = max(patience, timeout + margin)
    if isinstance(only, str) or isinstance(skip, str):
        raise TypeError("only= and skip= take a sequence of row names, such as ('sliced',)")
    rows = selected(tuple(only), tuple(skip))
    seed = get_run_seed() if seed is None else check_seed(seed)
    plan = Plan(exchange, None, idempotent, timeout, margin, patience, Calibration())
    return plan, seed, rows


@contextmanager
def _upstream(target: Address | None, exchange: Exchange) -> Iterator[Any]:
    if target is not None:
        yield target
        return
    server = serve(exchange)
    try:
        yield server.address
    finally:
        server.stop()


def _report(target: Address | None, exchange: Exchange, seed: int) -> SuiteReport:
    where = target if target is not None else f"our {exchange.name} server"
    return SuiteReport(socket_address(where), seed, protocol=f"{exchange.name} client")


def _finish(report: SuiteReport, started: float, raise_on_failure: bool) -> SuiteReport:
    report.seconds = time.monotonic() - started
    report.command = f"check_client(..., seed={report.seed})"
    if raise_on_failure:
        failed = report.failures
        if failed:
            reasons = "\n".join(f"  {r.fault}: {r.detail}" for r in failed)
            raise ContractBreak(
                f"the {report.protocol} against {report.address!r} broke {len(failed)} "
                f"contract(s) (seed {report.seed}; pass seed={report.seed} to replay):\n"
                f"{reasons}\n\n{report.table()}"
            )
    return report


def check_client(
    call: Callable[[Any], Any],
    *,
    target: Address | None = None,
    exchange: Exchange,
    expect: Any,
    idempotent: bool,
    timeout: float,
    seed: int | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    margin: float | None = None,
    patience: float | None = None,
    on_row: Callable[[SuiteRow], None] | None = None,
    raise_on_failure: bool = True,
) -> SuiteReport:
    """Run the client suite against ``call`` and return its report; raise
    :class:`~pytest_multiconn.errors.ContractBreak` listing the failing rows.

    ``call(address)`` makes ONE request with your client to ``address`` (a ``(host, port)``)
    and returns its result; it is called once per row (twice for ``stale_connection``),
    each time in a worker thread the suite stops waiting for after ``patience`` seconds
    (default: timeout + margin + 10 s).  ``target`` is your real server (the suite puts its
    fault proxy in front of it); without it the suite serves ``exchange`` itself.  ``expect``
    is the right result (a value, or a predicate); ``idempotent`` whether the request may be
    executed twice; ``timeout`` the client's configured timeout, which the stall rows hold it
    to, plus ``margin`` (default: the larger of 0.5 s and half the timeout).  ``only`` and
    ``skip`` pick rows by name (:data:`CLIENT_ROW_NAMES`); ``seed`` replays a run.
    """
    base, seed, rows = _prepare(exchange, idempotent=idempotent, timeout=timeout, margin=margin,
                                patience=patience, seed=seed, only=only, skip=skip)
    plan = _with_expect(base, expect)
    started = time.monotonic()
    report = _report(target, exchange, seed)
    with _upstream(target, exchange) as upstream:
        setup = Setup(upstream, seed)
        baseline, wire = drive(program(ROWS[0], plan, setup), call, plan.patience)
        plan = calibrated(plan, wire)
        for row in rows:
            if row.name == "baseline":
                done = baseline
            else:
                done, _ = drive(program(row, plan, setup), call, plan.patience)
            report.rows.append(done)
            if on_row is not None:
                on_row(done)
    return _finish(report, started, raise_on_failure)


async def acheck_client(
    acall: Callable[[Any], Awaitable[Any]],
    *,
    target: Address | None = None,
    exchange: Exchange,
    expect: Any,
    idempotent: bool,
    timeout: float,
    seed: int | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    margin: float | None = None,
    patience: float | None = None,
    on_row: Callable[[SuiteRow], None] | None = None,
    raise_on_failure: bool = True,
) -> SuiteReport:
    """:func:`check_client` for an async client (asyncio or trio, through anyio):
    ``await acall(address)`` makes one request; each call runs under a cancel scope of
    ``patience`` seconds, and the suite's own blocking steps run in worker threads."""
    from pytest_multiconn.core.blocking import to_thread

    base, seed, rows = _prepare(exchange, idempotent=idempotent, timeout=timeout, margin=margin,
                                patience=patience, seed=seed, only=only, skip=skip)
    plan = _with_expect(base, expect)
    started = time.monotonic()
    report = _report(target, exchange, seed)
    server = None if target is not None else await to_thread(serve, exchange)
    try:
        upstream = target if server is None else server.address
        setup = Setup(upstream, seed)
        baseline, wire = await adrive(program(ROWS[0], plan, setup), acall, plan.patience)
        plan = calibrated(plan, wire)
        for row in rows:
            if row.name == "baseline":
                done = baseline
            else:
                done, _ = await adrive(program(row, plan, setup), acall, plan.patience)
            report.rows.append(done)
            if on_row is not None:
                on_row(done)
    finally:
        if server is not None:
            await to_thread(server.stop)
    return _finish(report, started, raise_on_failure)


def _with_expect(plan: Plan, expect: Any) -> Plan:
    from dataclasses import replace

    return replace(plan, expect=expect)


__all__ = ["CLIENT_ROW_NAMES", "acheck_client", "check_client"]
