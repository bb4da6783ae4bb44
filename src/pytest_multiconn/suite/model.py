"""What a suite run produces: one :class:`SuiteRow` per check, gathered in a
:class:`SuiteReport`, with the measurements behind each verdict.

Everything here is plain data (no sockets, no threads), so the reports
(:mod:`pytest_multiconn.suite.reports`: JSON, JUnit XML, HTML) and the printed table read the
same objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.errors import ContractBreak

#: Row statuses: a kept contract, a broken one, a check that does not apply to this server
#: (with the reason), an observation (reported, never a failure).
PASS, FAIL, NA, NOTE = "pass", "FAIL", "n/a", "note"


@dataclass(frozen=True)
class Sample:
    """One reading of the server's process tree during a row: ``t`` seconds since the row
    started, its memory (``memory``: bytes, PSS summed over the tree where Linux gives it,
    else RSS) and the share of one CPU it used since the previous sample (``cpu``)."""

    t: float
    memory: int | None
    cpu: float | None


@dataclass(frozen=True)
class SuiteRow:
    """One check: which, how many connections and bytes, its status, and why.

    ``measurements`` are the numbers the verdict rests on (named, in their units: bytes,
    seconds, shares of a CPU); ``transcript`` is what happened on the wire, line by line;
    ``samples`` the server tree's memory and CPU over the row; ``pids`` the processes
    measured."""

    fault: str
    connections: int
    bytes: int
    passed: bool
    seconds: float
    detail: str = ""
    status: str = ""
    measurements: dict[str, Any] = field(default_factory=dict)
    transcript: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()
    pids: tuple[int, ...] = ()
    #: Seconds spent before the row waiting for the server to settle (connections closed,
    #: CPU back to idle).
    settle_seconds: float = 0.0

    @property
    def result(self) -> str:
        return self.status or (PASS if self.passed else FAIL)


def format_row(r: SuiteRow) -> str:
    return (f"{r.fault:<18} {r.connections:>6} {r.bytes:>11} {r.result:<6} "
            f"{r.seconds * 1e3:>7.0f}ms  {r.detail}")


@dataclass
class SuiteReport:
    """All rows of one suite run against ``address`` with ``seed``.

    ``pids`` are the server processes measured (the listener's owner and its children), empty
    when the server could not be seen; ``command`` is the command line that replays the run,
    when it came from one; ``seconds`` the whole run's wall time."""

    address: SocketAddress
    seed: int
    rows: list[SuiteRow] = field(default_factory=list)
    pid: int | None = None
    protocol: str = "echo"
    pids: tuple[int, ...] = ()
    command: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[SuiteRow]:
        return [r for r in self.rows if not r.passed]

    def table(self) -> str:
        head = f"{'check':<18} {'conns':>6} {'bytes':>11} {'result':<6} {'time':>9}  detail"
        lines = [head, "-" * len(head)]
        lines.extend(format_row(r) for r in self.rows)
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`ContractBreak` naming every failed row."""
        failed = self.failures
        if failed:
            reasons = "\n".join(f"  {r.fault}: {r.detail}" for r in failed)
            raise ContractBreak(
                f"{self.protocol} server at {self.address!r} broke {len(failed)} contract(s) "
                f"(seed {self.seed}; rerun with the same seed to replay):\n{reasons}"
            )
