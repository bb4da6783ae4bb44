"""The proxy's pipelines: the one fault engine of :mod:`pytest_multiconn.faults.pipeline`.

A proxied direction's :class:`Pipe` reads from one :class:`~pytest_multiconn.proxy.side.Side`
(its :class:`~pytest_multiconn.faults.pipeline.PipeSource`) and writes into the other (its
:class:`~pytest_multiconn.faults.pipeline.PipeTarget`); servers run the same pipes on what
they send and receive.
"""

from pytest_multiconn.faults.pipeline import (
    DIRECTIONS,
    PIPED_READ_SIZE,
    SHORT,
    TURN_WRITES,
    Direction,
    Gate,
    Pipe,
    PipePair,
    PipeSource,
    PipeTarget,
    check_direction,
)

__all__ = [
    "DIRECTIONS",
    "PIPED_READ_SIZE",
    "SHORT",
    "TURN_WRITES",
    "Direction",
    "Gate",
    "Pipe",
    "PipePair",
    "PipeSource",
    "PipeTarget",
    "check_direction",
]
