"""The proxy's faults ("toxics", after toxiproxy), one module per toxic.

:mod:`~pytest_multiconn.faults.toxics.base` has what every toxic builds on (:class:`Toxic`,
:class:`Stage`, :class:`PipeAPI`, :class:`Sink`, the :data:`TOXICS` registry); each other
module holds one toxic and its stage, and registers it on import.
"""

from typing import TYPE_CHECKING, Any

from pytest_multiconn.faults.toxics.base import (
    NotApplied,
    PipeAPI,
    QueueStage,
    Sink,
    Stage,
    Toxic,
)

if TYPE_CHECKING:
    from pytest_multiconn.faults.toxics.bandwidth import Bandwidth
    from pytest_multiconn.faults.toxics.base import TOXICS
    from pytest_multiconn.faults.toxics.coalesce import Coalesce
    from pytest_multiconn.faults.toxics.corrupt import Corrupt
    from pytest_multiconn.faults.toxics.latency import Latency
    from pytest_multiconn.faults.toxics.limit_data import LimitData
    from pytest_multiconn.faults.toxics.reset_peer import ResetPeer
    from pytest_multiconn.faults.toxics.slicer import Slicer
    from pytest_multiconn.faults.toxics.slow_close import SlowClose
    from pytest_multiconn.faults.toxics.substitute import Substitute
    from pytest_multiconn.faults.toxics.timeout import Timeout
    from pytest_multiconn.faults.toxics.truncate import Truncate

#: Each toxic and its module, imported on first use: a server without faults needs only the
#: base classes (the toxics' dataclasses cost about 7 ms to import, once per process).  The
#: order is TOXICS's: toxiproxy's README order, then ours (corruption and reshaping).
_MODULES: dict[str, str] = {
    "Latency": "latency",
    "Bandwidth": "bandwidth",
    "Slicer": "slicer",
    "LimitData": "limit_data",
    "Timeout": "timeout",
    "ResetPeer": "reset_peer",
    "SlowClose": "slow_close",
    "Corrupt": "corrupt",
    "Substitute": "substitute",
    "Coalesce": "coalesce",
    "Truncate": "truncate",
}


def _load_all() -> None:
    """Import every toxic, so :data:`TOXICS` names them all, in :data:`_MODULES` order
    (whichever a caller imported first)."""
    import importlib

    from pytest_multiconn.faults.toxics import base

    classes = [
        getattr(importlib.import_module(f"{__name__}.{module}"), name)
        for name, module in _MODULES.items()
    ]
    ours = {cls.name: cls for cls in classes}
    if list(base.TOXICS)[: len(ours)] != list(ours):
        others = {k: v for k, v in base.TOXICS.items() if k not in ours}
        base.TOXICS.clear()
        base.TOXICS.update(ours)
        base.TOXICS.update(others)  # a user's own toxics, after ours


def __getattr__(name: str) -> Any:
    if name == "TOXICS":
        from pytest_multiconn.faults.toxics import base

        _load_all()
        return base.TOXICS
    module = _MODULES.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TOXICS",
    "Bandwidth",
    "Coalesce",
    "Corrupt",
    "Latency",
    "LimitData",
    "NotApplied",
    "PipeAPI",
    "QueueStage",
    "ResetPeer",
    "Sink",
    "Slicer",
    "SlowClose",
    "Stage",
    "Substitute",
    "Timeout",
    "Toxic",
    "Truncate",
]
