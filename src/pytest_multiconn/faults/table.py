"""The fault table: named faults, each on a direction, as a proxy or a server keeps them.

``FaultProxy.add(...)``, ``server.add(...)`` and ``UDPFaultProxy.add(...)`` share one
:class:`FaultTable` (generic over the fault type: stream faults, datagram faults), so names,
errors and ``faults()`` are the same everywhere.  For stream faults: a fault added under a name
(default ``<kind>_<direction>``, as toxiproxy names toxics) acts on one direction
("upstream": what the client sends; "downstream": what it receives; "both") of every live
and future connection, with a ``probability`` drawn once per connection and direction; its
stages get their random numbers from one derivation (seed, connection number, direction,
name), so one seed replays one schedule.  Loop thread only, except the checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pytest_multiconn.core.checks import check_fraction
from pytest_multiconn.core.layer import Recorder
from pytest_multiconn.core.seed import derive_seed
from pytest_multiconn.faults.base import Fault
from pytest_multiconn.faults.pipeline import (
    DIRECTIONS,
    SHORT,
    Direction,
    Pipe,
    check_direction,
)
from pytest_multiconn.faults.toxics.base import Stage, Toxic

F = TypeVar("F", bound=Fault)
T = TypeVar("T")


@dataclass
class FaultEntry(Generic[F]):
    """A fault as a table keeps it: what to apply, where, and how likely."""

    name: str
    fault: F
    direction: str
    probability: float

    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS if self.direction == "both" else (self.direction,)


@dataclass(frozen=True)
class FaultInfo(Generic[F]):
    """A fault configured on a server or proxy: its name, parameters, direction, probability
    (drawn once per connection and direction; 1.0 where the owner has no such draw, as on
    the UDP proxy, whose faults carry their own per-datagram ``probability``)."""

    name: str
    fault: F
    direction: str
    probability: float


def check_probability(value: object) -> float:
    """A probability from 0 to 1 (the one check: ``add()`` and ``update()`` of every table)."""
    return check_fraction(value, "probability")


#: What a stream fault table takes, said in its errors.
STREAM_FAULTS = (
    "stream faults such as Latency(ms=50) or When(ResetPeer(), match=b'COMMIT') "
    "(pytest_multiconn.faults); client faults go on the client"
)


def check_fault(fault: object) -> Toxic:
    """A stream fault, or the TypeError every stream fault table raises."""
    if not isinstance(fault, Toxic):
        raise TypeError(f"faults are {STREAM_FAULTS}, got {fault!r}")
    return fault


class FaultTable(Generic[F]):
    """Named faults in the order they apply: the one table of the TCP proxy, the UDP proxy
    and the servers (``add``/``update``/``remove``/``clear``/``faults`` of each go through it).

    ``owner`` names the owner in errors; ``fault_type`` and ``what`` are the faults it takes
    and how its TypeError says so.  :meth:`check_add` runs in any thread, the rest in the
    owner's loop thread once it runs.
    """

    def __init__(self, owner: str, fault_type: type[F], what: str) -> None:
        self.owner = owner
        self.fault_type = fault_type
        self.what = what
        self.entries: dict[str, FaultEntry[F]] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"[{', '.join(self.entries)}]"

    def __iter__(self) -> Iterator[FaultEntry[F]]:
        return iter(list(self.entries.values()))

    def check_add(self, fault: object, direction: str, probability: object, name: object
                  ) -> tuple[F, float]:
        """The checks of ``add()`` (any thread): the fault, the direction, the probability,
        the name (None: the table picks one)."""
        if not isinstance(fault, self.fault_type):
            raise TypeError(f"faults are {self.what}, got {fault!r}")
        check_direction(direction, allow_both=True)
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string or None, got {name!r}")
        return fault, check_probability(probability)

    def add(self, fault: F, direction: str, probability: float, name: str | None
            ) -> FaultEntry[F]:
        """Add ``fault`` (checked by :meth:`check_add`) under ``name``, by default
        ``<fault name>_<direction>`` (then ``_2``, ``_3``...), as toxiproxy names toxics."""
        if name is None:
            base = f"{fault.name}_{direction}"
            name = base
            for i in itertools.count(2):
                if name not in self.entries:
                    break
                name = f"{base}_{i}"
        elif name in self.entries:
            raise ValueError(f"a fault named {name!r} is already on {self.owner}; remove() it "
                             "or update() it, or pick another name")
        entry = FaultEntry(name, fault, direction, probability)
        self.entries[name] = entry
        return entry

    def entry(self, name: str) -> FaultEntry[F]:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.entries) or "none"
            raise KeyError(
                f"no fault named {name!r} on {self.owner} (configured: {known})"
            ) from None

    def update(self, name: str, params: dict[str, Any], probability: float | None
               ) -> FaultEntry[F]:
        entry = self.entry(name)
        if params:
            entry.fault = entry.fault.replace(**params)
        if probability is not None:
            entry.probability = probability
        return entry

    def remove(self, name: str) -> FaultEntry[F]:
        entry = self.entry(name)
        del self.entries[name]
        return entry

    def names(self) -> list[str]:
        return list(self.entries)

    def info(self) -> list[FaultInfo[F]]:
        return [FaultInfo(e.name, e.fault, e.direction, e.probability) for e in self]

    def report_lines(self, indent: str = "  ") -> list[str]:
        """One line per fault, for an owner's failure report (the per-connection draw only
        where there is one: not 1.0, which the UDP proxy's faults always have)."""
        return [f"{indent}fault {e.name}: {e.fault!r} direction={e.direction}"
                + (f" probability={e.probability:g}" if e.probability < 1.0 else "")
                for e in self]


class FaultHolder(Protocol):
    """A live connection's faults, as its owner's table reaches them (loop thread): a
    proxied pair, a server connection's :class:`~pytest_multiconn.servers.faulting.
    ConnectionFaults`."""

    def add(self, entry: FaultEntry[Toxic]) -> None:
        """Install ``entry``'s stages (its directions, its probability draw)."""

    def update(self, name: str, fault: Toxic) -> None:
        """Give the stages of fault ``name`` the new parameters."""

    def remove(self, name: str) -> None:
        """Remove the stages of fault ``name``; what they hold is passed on."""


class StreamFaults:
    """``add``/``update``/``remove``/``clear``/``faults`` of a TCP proxy and of a server: one
    implementation, so they behave the same everywhere.  The owner keeps a stream table in
    ``_fault_table`` and says how to run in its loop thread (``_in_loop``) and which live
    connections take faults (``_fault_holders``)."""

    _fault_table: FaultTable[Toxic]

    if TYPE_CHECKING:  # the owner's (LoopService._in_loop): declared here for the checker only
        def _in_loop(self, fn: Callable[[], T], timeout: float | None = None) -> T: ...

    def _fault_holders(self) -> list[FaultHolder]:
        raise NotImplementedError

    def add(self, fault: Toxic, direction: Direction = "downstream", probability: float = 1.0,
            name: str | None = None) -> str:
        """Apply stream fault ``fault`` (``Latency(ms=50)``, ``When(ResetPeer(),
        match=...)``) to ``direction`` of every connection, live and future; return its name
        (default ``<kind>_<direction>``, as toxiproxy names toxics, then ``_2``...).

        On a proxy "upstream" is what the client sends, "downstream" what it receives; on
        a server "downstream" is what the server sends, "upstream" what it receives (before
        the handler's ``data_received``); "both" is both; over TLS, the plaintext.
        ``probability`` (toxiproxy's *toxicity*) is drawn once per connection and direction.
        """
        toxic, chance = self._fault_table.check_add(fault, direction, probability, name)

        def go() -> str:
            entry = self._fault_table.add(toxic, direction, chance, name)
            for holder in self._fault_holders():
                holder.add(entry)
            return entry.name

        return self._in_loop(go)

    def update(self, name: str, **params: Any) -> Toxic:
        """Change parameters of fault ``name`` (``probability=`` too, for new connections);
        live connections use the new values from now on.  Bytes a delaying fault holds
        (``Latency``, ``Slicer``, ``Bandwidth``, ``SlowClose``) are passed on at once, as
        toxiproxy does when a toxic is updated.  Returns the new fault object."""
        probability = params.pop("probability", None)
        if probability is not None:
            probability = check_probability(probability)

        def go() -> Toxic:
            entry = self._fault_table.update(name, params, probability)
            for holder in self._fault_holders():
                holder.update(name, entry.fault)
            return entry.fault

        return self._in_loop(go)

    def remove(self, name: str) -> None:
        """Remove fault ``name``; bytes it was holding are passed on at once."""

        def go() -> None:
            self._fault_table.remove(name)
            for holder in self._fault_holders():
                holder.remove(name)

        self._in_loop(go)

    def clear(self) -> None:
        """Remove every fault."""
        for info in self.faults():
            self.remove(info.name)

    def faults(self) -> list[FaultInfo[Toxic]]:
        """The faults configured now, in the order they apply."""
        return self._in_loop(self._fault_table.info)


def stream_table(owner: str) -> FaultTable[Toxic]:
    """The table of stream faults a TCP proxy or a server keeps."""
    return FaultTable(owner, Toxic, STREAM_FAULTS)


def install(entry: FaultEntry[Toxic], direction: str, *, seed: int, number: int, pipe: Pipe,
            transcript: Recorder) -> Stage | None:
    """Put ``entry``'s stage for ``direction`` of connection ``number`` into ``pipe`` (None:
    the probability draw said not this connection, which the transcript notes)."""
    if entry.probability < 1.0:
        draw = Random(derive_seed(seed, "toxicity", number, direction, entry.name))
        if draw.random() >= entry.probability:
            transcript.record(
                "fault", 0,
                f"{entry.name}: not applied ({SHORT[direction]}, p={entry.probability:g})",
            )
            return None
    rng = Random(derive_seed(seed, "toxic", number, direction, entry.name))
    stage = entry.fault.make_stage(pipe, rng)
    stage.name = f"{entry.name}[{SHORT[direction]}]"
    stage.toxic_name = entry.name  # type: ignore[attr-defined]
    pipe.add(stage)
    return stage


__all__ = ["STREAM_FAULTS", "FaultEntry", "FaultHolder", "FaultInfo", "FaultTable",
           "StreamFaults", "check_fault",
           "check_probability", "install", "stream_table"]
