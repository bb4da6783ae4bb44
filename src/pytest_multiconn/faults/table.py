"""The fault table: named stream faults, each on a direction, as a proxy or a server keeps them.

``FaultProxy.add(...)`` and ``server.add(...)`` share this: a fault added under a name
(default ``<kind>_<direction>``, as toxiproxy names toxics) acts on one direction
("upstream": what the client sends; "downstream": what it receives; "both") of every live
and future connection, with a ``probability`` drawn once per connection and direction; its
stages get their random numbers from one derivation (seed, connection number, direction,
name), so one seed replays one schedule.  Loop thread only, except the checks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from random import Random
from typing import Any

from pytest_multiconn.core.layer import Recorder
from pytest_multiconn.core.seed import derive_seed
from pytest_multiconn.faults.pipeline import DIRECTIONS, SHORT, Pipe, check_direction
from pytest_multiconn.faults.toxics import Stage, Toxic


@dataclass
class FaultEntry:
    """A fault as a table keeps it: what to apply, where, and how likely."""

    name: str
    fault: Toxic
    direction: str
    probability: float

    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS if self.direction == "both" else (self.direction,)


@dataclass(frozen=True)
class FaultInfo:
    """A fault configured on a server or proxy: its name, parameters, direction, probability."""

    name: str
    fault: Toxic
    direction: str
    probability: float


def check_probability(value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0):
        raise ValueError(f"probability must be a number from 0 to 1, got {value!r}")
    return float(value)


def check_fault(fault: object) -> Toxic:
    if not isinstance(fault, Toxic):
        raise TypeError(
            f"faults are stream faults such as Latency(ms=50) or When(ResetPeer(), "
            f"match=b'COMMIT') (pytest_multiconn.faults), got {fault!r}; client faults go on "
            "the client"
        )
    return fault


class FaultTable:
    """Named faults in the order they apply (loop thread, once the owner runs)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.entries: dict[str, FaultEntry] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"[{', '.join(self.entries)}]"

    def add(self, fault: Toxic, direction: str, probability: float, name: str | None
            ) -> FaultEntry:
        if name is None:
            base = f"{fault.kind}_{direction}"
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

    def entry(self, name: str) -> FaultEntry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.entries) or "none"
            raise KeyError(
                f"no fault named {name!r} on {self.owner} (configured: {known})"
            ) from None

    def update(self, name: str, params: dict[str, Any], probability: float | None
               ) -> FaultEntry:
        entry = self.entry(name)
        if params:
            entry.fault = entry.fault.replace(**params)
        if probability is not None:
            entry.probability = probability
        return entry

    def remove(self, name: str) -> FaultEntry:
        entry = self.entry(name)
        del self.entries[name]
        return entry

    def info(self) -> list[FaultInfo]:
        return [FaultInfo(e.name, e.fault, e.direction, e.probability)
                for e in list(self.entries.values())]


def check_add(fault: object, direction: str, probability: object) -> tuple[Toxic, float]:
    """The checks of ``add()`` (any thread): the fault, the direction, the probability."""
    toxic = check_fault(fault)
    check_direction(direction, allow_both=True)
    return toxic, check_probability(probability)


def install(entry: FaultEntry, direction: str, *, seed: int, number: int, pipe: Pipe,
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


__all__ = ["FaultEntry", "FaultInfo", "FaultTable", "check_add", "check_fault",
           "check_probability", "install"]
