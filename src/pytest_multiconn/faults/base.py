"""The one shape every fault has: client faults and stream faults (toxics), on servers and
the proxy alike.

A fault is a frozen dataclass of parameters and nothing else::

    @dataclass(frozen=True, repr=False)
    class Slicer(Toxic):
        name = "slicer"
        average_size: int = param(1, integer(1))

* its parameters are checked in one place (:mod:`pytest_multiconn.faults.params`) when it is
  made and when :meth:`Fault.replace` makes a changed copy;
* ``name`` is its snake_case name, unique in its family's :class:`Registry` (the CLI's
  ``--fault latency:ms=60``, pytest ids, the fault catalogue);
* ``probability`` (toxiproxy's *toxicity*) is the chance that it acts on one connection;
* its random numbers come from :func:`fault_rng`, the same derivation in every family: run
  seed, family, connection number, position (index in the list, or the proxy direction) and
  name, so one seed replays one schedule;
* it acts on a connection only through a narrow Protocol that its family documents
  (:class:`~pytest_multiconn.faults.ClientConnectionAPI`,
  :class:`~pytest_multiconn.faults.PipeAPI`),
  through a per-connection object it makes (a session, a stage) that holds the state.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from pytest_multiconn.core.seed import derive_seed
from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults import params as checks
from pytest_multiconn.faults.params import validate


def parameter_names(cls: type[Fault] | Fault) -> list[str]:
    """A fault's parameter names, its own first and the shared ones (``probability``) last."""
    names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    shared = [f.name for f in dataclasses.fields(Fault)]
    return [n for n in names if n not in shared] + [n for n in shared if n in names]


def fault_rng(seed: int, family: str, conn: int, position: object, name: str) -> random.Random:
    """The ``random.Random`` of fault ``name`` at ``position`` (its index in the list, or the
    proxy direction) on connection ``conn`` of a run seeded with ``seed``, in ``family``.

    Every family derives its numbers this way, so the labels of any random choice can be
    told from the fault and the connection alone.
    """
    return random.Random(derive_seed(seed, family, conn, position, name))


@dataclass(frozen=True, repr=False)
class Fault:
    """Base of every fault: frozen parameters, a name, a probability, ``replace()``.

    Subclass a family's base (``ClientFault``, ``Toxic``), decorate it with
    ``@dataclass(frozen=True, repr=False)``, declare parameters with :func:`param` and a check
    from :mod:`pytest_multiconn.faults.params`, set ``name``, and override :meth:`check` for
    rules that involve several parameters (not ``__post_init__``: that runs the checks).
    """

    #: The family's label in seeds and messages ("client", "server", "toxic").
    family: ClassVar[str] = "fault"
    #: snake_case name, unique in the family's registry.
    name: ClassVar[str] = "fault"
    #: Parameters of the instance that :meth:`Registry.catalogue` makes (a quick test run).
    quick: ClassVar[Mapping[str, Any]] = {}

    probability: float = dataclasses.field(
        default=1.0, kw_only=True, metadata=checks.checked(checks.probability())
    )

    def __post_init__(self) -> None:
        validate(self, type(self).__name__)
        self.check()

    def check(self) -> None:
        """Rules that involve several parameters (raise :class:`FaultParameterError`)."""

    def replace(self, **params: Any) -> Self:
        """A copy with ``params`` changed, checked like a new fault."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(params) - known
        if unknown:
            raise FaultParameterError(
                f"{type(self).__name__} has no parameter {', '.join(sorted(unknown))}; "
                f"its parameters are: {', '.join(parameter_names(self))}"
            )
        return dataclasses.replace(self, **params)

    def params(self) -> dict[str, Any]:
        """Every parameter and its value."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def applies(self, seed: int, conn: int, position: object) -> bool:
        """Whether this fault acts on connection ``conn`` (one seeded draw if probability < 1)."""
        if self.probability >= 1.0:
            return True
        draw = random.Random(derive_seed(seed, self.family, "probability", conn, position,
                                         self.name))
        return draw.random() < self.probability

    def rng(self, seed: int, conn: int, position: object) -> random.Random:
        """This fault's random numbers on connection ``conn``: :func:`fault_rng`."""
        return fault_rng(seed, self.family, conn, position, self.name)

    def __repr__(self) -> str:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        shown = {k: v for k, v in self.params().items()
                 if k not in defaults or defaults[k] is dataclasses.MISSING or v != defaults[k]}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


F = TypeVar("F", bound=Fault)


class Registry(dict[str, type[F]], Generic[F]):
    """A family's faults by ``name``: what the CLI, pytest ids and the catalogue look up."""

    def __init__(self, family: str) -> None:
        super().__init__()
        self.family = family

    def register(self, cls: type[F]) -> type[F]:
        """Class decorator: add ``cls`` under ``cls.name`` (names are unique)."""
        name = cls.name
        if not name.isidentifier() or name != name.lower():
            raise ValueError(f"{cls.__name__}.name must be snake_case, got {name!r}")
        old = self.get(name)
        if old is not None and old is not cls:
            raise ValueError(
                f"{self.family} fault name {name!r} is taken by {old.__qualname__}; "
                f"give {cls.__qualname__} another name"
            )
        self[name] = cls
        return cls

    def lookup(self, name: str) -> type[F]:
        """The class named ``name`` (``-`` and ``_`` alike, any case), or a clear error."""
        cls = self.get(name.strip().lower().replace("-", "_"))
        if cls is None:
            raise FaultParameterError(
                f"unknown fault {name!r}; known {self.family} faults: {', '.join(self)}"
            )
        return cls

    def create(self, name: str, **params: Any) -> F:
        """``create("latency", ms=50)`` -> ``Latency(ms=50)``; unknown keys name the known."""
        cls = self.lookup(name)
        fields = parameter_names(cls)
        unknown = sorted(set(params) - set(fields)) if fields else []
        if unknown:
            raise FaultParameterError(
                f"{cls.name} takes {', '.join(fields)}; it has no parameter {', '.join(unknown)}"
            )
        try:
            return cls(**params)
        except FaultParameterError:
            raise
        except TypeError as exc:  # a required parameter is missing
            raise FaultParameterError(f"{cls.__name__}: {exc}") from None

    def catalogue(self, keep: Callable[[type[F]], bool] = lambda cls: True) -> list[F]:
        """One instance of every registered fault, made with its ``quick`` parameters."""
        return [cls(**cls.quick) for cls in self.values() if keep(cls)]
