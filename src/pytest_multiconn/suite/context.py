"""What every row of the suite shares: the limits, the run's context (address, exchange,
seed, the server tree and what earlier rows found), a row's record (its transcript and
measurements) and the verdict exceptions.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.checks import check_count, check_number, check_seconds
from pytest_multiconn.core.seed import derive_seed
from pytest_multiconn.exchanges.base import Exchange
from pytest_multiconn.suite.measure import Sampler, ServerTree
from pytest_multiconn.suite.peers import Talk, talk
from pytest_multiconn.suite.probes import ExchangeProbe

#: Transcript lines a row keeps (the first ones: the rest is counted).
MAX_TRANSCRIPT = 200


@dataclass(frozen=True)
class SuiteLimits:
    """The bounds the suite holds a server to: the judgement calls, each with a default a
    loaded CI machine passes with a well-behaved server (``multiconn suite`` takes each as an
    option)."""

    #: Growth of the server's memory under never-readers that counts as buffering without
    #: bound (when it is still growing at the end): bounded servers grow by about their
    #: read buffers, well under 1 MiB per connection.
    max_growth: int = 32 * 1024 * 1024
    #: Bytes the never-readers offer at most, in all: a server that takes them all without
    #: growing reads and discards (nginx after ``keepalive_requests``), which is bounded.
    offered: int = 256 * 1000 * 1000
    #: Share of one CPU an idle server may use while its connections sit idle.
    max_idle_cpu: float = 0.25
    #: Preemptions of an idle server within the idle window (a spinner has dozens).
    max_idle_preemptions: int = 20
    #: Worst round trip another client may see while one misbehaves.
    max_probe_latency: float = 1.0
    #: Bound on each check's client work.
    timeout: float = 10.0
    #: Connections the burst row opens at once.
    burst: int = 128

    def __post_init__(self) -> None:
        check_count(self.max_growth, "max_growth", minimum=1)
        check_count(self.offered, "offered", minimum=1)
        check_count(self.max_idle_preemptions, "max_idle_preemptions", minimum=1)
        check_count(self.burst, "burst", minimum=1)
        check_seconds(self.max_probe_latency, "max_probe_latency")
        check_seconds(self.timeout, "timeout")
        # 64 CPUs at most: more is a typo for a share (0.25 = 25% of one CPU).
        check_number(self.max_idle_cpu, "max_idle_cpu", above=0, at_most=64,
                     what="a positive share of one CPU (0.25 = 25%)")


class Failed(Exception):
    """A row's verdict: the contract it broke, in words."""


class Status(Exception):
    """A row that does not apply (n/a) or only observed (note)."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class RowRecord:
    """What one row collects while it runs: connections and bytes, its transcript, the
    measurements its verdict rests on, and the sampler of the server tree."""

    sampler: Sampler
    connections: int = 0
    bytes: int = 0
    transcript: list[str] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    dropped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def note(self, line: str) -> None:
        """One line of the row's transcript, stamped with the time into the row."""
        with self.lock:
            if len(self.transcript) < MAX_TRANSCRIPT:
                self.transcript.append(f"{time.monotonic() - self.started:7.3f}s  {line}")
            else:
                self.dropped += 1

    def measure(self, **values: Any) -> None:
        with self.lock:
            self.measurements.update(values)


@dataclass
class Context:
    """One suite run: where, what protocol, the seed, the limits, the server tree, TLS, and
    what earlier rows found (keep-alive, reply size, a serial server)."""

    address: SocketAddress
    exchange: Exchange
    seed: int
    limits: SuiteLimits
    tree: ServerTree
    tls: Any
    setup: tuple[bytes, ...] = ()
    keep_alive: bool = True
    serial: bool = False
    reply_size: float = 0.0
    row: RowRecord | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def record(self) -> RowRecord:
        if self.row is None:  # pragma: no cover - the runner sets it before every row
            raise RuntimeError("no row is running")
        return self.row

    def rng(self, label: str, *parts: object) -> random.Random:
        return random.Random(derive_seed(self.seed, label, *parts))

    def deadline(self) -> float:
        return time.monotonic() + self.limits.timeout

    def count(self, connections: int, nbytes: int) -> None:
        record = self.record
        with record.lock:
            record.connections += connections
            record.bytes += nbytes

    def talk(self, label: str, i: int, count: int, how: str = "serial", **kwargs: Any) -> Talk:
        rng = self.rng(label, i)
        if not self.keep_alive:
            count = 1
        requests = self.exchange.requests(count, rng, kwargs.pop("size", None))
        deadline = kwargs.pop("deadline", None) or self.deadline()
        result = talk(self.address, self.tls, self.exchange, requests, deadline,
                      how=how, rng=rng, **kwargs)
        self.count(1, sum(len(r) for r in requests))
        outcome = "ok" if result.problem is None else f"FAILED: {result.problem}"
        self.record.note(f"{label}[{i}]: {len(requests)} request(s) {how}, "
                         f"{len(result.reader.outcomes)} reply(ies), {outcome}")
        return result

    def many(self, label: str, n: int, count: int, how: str = "serial", **kwargs: Any
             ) -> list[Talk]:
        with ThreadPoolExecutor(max_workers=min(n, 16), thread_name_prefix="multiconn-suite"
                                ) as pool:
            futures = [pool.submit(self.talk, label, i, count, how, **kwargs) for i in range(n)]
            return [f.result() for f in futures]

    def expect_ok(self, talks: Sequence[Talk], what: str) -> None:
        bad = [(i, t) for i, t in enumerate(talks) if t.problem is not None]
        if bad:
            i, first = bad[0]
            raise Failed(f"{len(bad)}/{len(talks)} {what} failed; first (connection {i}): "
                         f"{first.problem}")

    def serial_cause(self) -> str:
        return (" (it serves one connection at a time: see the concurrency row)"
                if self.serial else "")

    def probe(self, label: str) -> ExchangeProbe:
        return ExchangeProbe(self.address, self.exchange, self.tls,
                             timeout=max(self.limits.max_probe_latency * 3, 2.0),
                             seed=derive_seed(self.seed, "probe", label))

    def probe_ok(self, probe: ExchangeProbe, while_what: str) -> None:
        """Fail when the probe beside a misbehaving client was starved."""
        self.record.measure(probe_trips=len(probe.trips),
                            probe_worst_seconds=round(probe.worst, 4))
        if probe.error is not None:
            raise Failed(f"another client could not be served while {while_what}: "
                         f"{probe.error}{self.serial_cause()}")
        if not probe.trips:
            raise Failed(f"another client got no reply at all while {while_what} (starved)"
                         f"{self.serial_cause()}")
        # Judged on the slowest trip less the time this process was not scheduled meanwhile
        # (the probe's hiccup meter): on a loaded machine a trip can wait a second for a CPU.
        if probe.worst_not_stalled() > self.limits.max_probe_latency:
            cause = self.serial_cause()
            if probe.waited_for_close():
                cause = (" : it serves one connection at a time (the probe's reply came only "
                         "when the other connection ended)")
            stalled = probe.worst - probe.worst_not_stalled()
            note = (f"; {stalled * 1e3:.0f} ms of it this process was not scheduled"
                    if stalled else "")
            raise Failed(
                f"another client was starved while {while_what}: a reply took "
                f"{probe.worst * 1e3:.0f} ms (limit {self.limits.max_probe_latency * 1e3:.0f} "
                f"ms{note}){cause}"
            )
