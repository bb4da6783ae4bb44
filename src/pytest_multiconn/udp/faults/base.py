"""Datagram faults: the base every UDP fault builds on, and the registry they join.

A datagram fault is shaped like every fault (:class:`~pytest_multiconn.faults.Fault`): a
frozen dataclass of parameters checked by :mod:`pytest_multiconn.faults.params`, a snake_case
``name`` registered in :data:`UDP_FAULTS`, a ``probability``.  One difference, because UDP
has no connections: **probability is drawn per datagram** (a datagram is the unit a UDP
fault acts on, as a connection is for a TCP fault); ``Drop(probability=0.5)`` drops about
every other datagram.

When a fault is on one direction of one proxy session, :meth:`DatagramFault.make_stage`
builds a :class:`DatagramStage`: a link of that direction's pipeline that receives
:class:`Datagram` objects (``feed``) and passes them, changed, copied, held or not at all, to
the next link.  Stages run only in the proxy's loop thread, use its timers, reach their
direction only through :class:`DatagramPipeAPI`, and draw every random number from the
``random.Random`` they are given: :func:`~pytest_multiconn.faults.fault_rng` of the proxy's
seed, family ``"udp"``, the session number, the direction and the fault's entry name.  For
each datagram a stage draws, in this order: the probability draw (only when
``probability < 1``), then the fault's own numbers, so a schedule can be replayed, and
predicted, from the seed alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar, Protocol

from pytest_multiconn.core.loop import Loop
from pytest_multiconn.faults.base import Fault, Registry


@dataclass(frozen=True, slots=True)
class FaultAction:
    """One thing a fault did to one datagram: an entry of its session's transcript (the
    entry's ``detail``), and what :attr:`UDPSessionInfo.actions` lists."""

    when: float
    direction: str
    fault: str
    index: int
    size: int
    action: str

    def describe(self) -> str:
        """The transcript line's text after the time and direction."""
        return f"#{self.index:<5} {self.size:>6} B  {self.fault}: {self.action}"


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram in a pipeline: its bytes and its index (0 = the session's first datagram
    in that direction; copies and changed versions keep the index of the original)."""

    index: int
    data: bytes


class DatagramSink(Protocol):
    """The next link of a pipeline."""

    def feed(self, datagram: Datagram) -> None: ...


class DatagramPipeAPI(Protocol):
    """What a stage may ask of the direction it sits in (implemented by the proxy)."""

    #: The proxy's selector loop: timers (``call_later``, ``call_at``), in its thread.
    loop: Loop
    #: ``"upstream"`` (client to target) or ``"downstream"`` (target to client).
    direction: str
    #: The session's number on its proxy (1 = first client address seen).
    session: int

    def note(self, stage: DatagramStage, datagram: Datagram, action: str) -> None:
        """Add an entry to the session's transcript: what ``stage`` did to ``datagram``."""


@dataclass(frozen=True, repr=False)
class DatagramFault(Fault):
    """Base class of UDP faults: parameters only; a stage does the work.

    A subclass sets ``name`` and ``stage_class`` and declares its parameters.
    """

    family: ClassVar[str] = "udp"
    name: ClassVar[str] = "datagram_fault"
    quick: ClassVar[Mapping[str, Any]] = {}
    stage_class: ClassVar[type[DatagramStage]]

    def make_stage(self, pipe: DatagramPipeAPI, rng: Random, name: str) -> DatagramStage:
        """This fault acting on one direction of one session."""
        return self.stage_class(self, name, pipe, rng)


#: UDP fault classes by name (``UDP_FAULTS.create("drop", probability=0.5)``).
UDP_FAULTS: Registry[DatagramFault] = Registry("udp")


class DatagramStage:
    """One fault acting on one direction of one session (loop thread only).

    ``fault`` is the parameters (replaced on ``update()``), ``name`` the entry's name with
    the direction (``drop_upstream[up]``), ``pipe`` its :class:`DatagramPipeAPI`, ``rng``
    its random numbers and ``next`` the sink it passes datagrams to.  Subclasses override
    :meth:`act`; :meth:`feed` makes the per-datagram probability draw first.
    """

    def __init__(self, fault: DatagramFault, name: str, pipe: DatagramPipeAPI,
                 rng: Random) -> None:
        self.fault = fault
        self.name = name
        self.pipe = pipe
        self.rng = rng
        self.next: DatagramSink
        #: The name the fault was added under (``drop_upstream``): transcripts show it.
        self.entry_name = name.partition("[")[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.fault!r}>"

    def feed(self, datagram: Datagram) -> None:
        p = self.fault.probability
        if p < 1.0 and self.rng.random() >= p:
            self.next.feed(datagram)  # spared: not worth a transcript line each
            return
        self.act(datagram)

    def act(self, datagram: Datagram) -> None:
        """The fault acts on ``datagram`` (after a probability draw that said yes)."""
        self.next.feed(datagram)

    def note(self, datagram: Datagram, action: str) -> None:
        self.pipe.note(self, datagram, action)

    def pending(self) -> int:
        """Datagrams this stage holds now (delayed, waiting for reordering)."""
        return 0

    def detach(self) -> None:
        """The fault was removed: pass on everything held, at once, and stop timers."""

    def stop(self) -> None:
        """The session ended: drop everything held and stop timers."""
