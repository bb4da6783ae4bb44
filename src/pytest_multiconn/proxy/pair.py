"""A proxied connection: the client side, the server side and what lies between (:class:`Pair`).

A pair owns both :class:`~pytest_multiconn.proxy.side.Side` objects, the pipeline of each
direction that has faults or step mode (:class:`~pytest_multiconn.faults.pipeline.Pipe`), and
the kernel pipe of each spliced direction (:class:`~pytest_multiconn.proxy.splice.Splice`).
It applies the proxy's faults when the client connects, and ends both sides together: a
half-close crosses as a half-close, an error or RST as an RST.  What it reads of the proxy is
:class:`PairProxy`; what it shares with it (the fault table, step mode, the splice switch, the
calls that report its ends) is one :class:`Relay`; to the proxy's fault table it is a
:class:`~pytest_multiconn.faults.table.FaultHolder`.  Loop thread only.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_multiconn.core.address import ServerAddress, SocketAddress
from pytest_multiconn.core.connection import Connection, Phase
from pytest_multiconn.core.loop import Loop
from pytest_multiconn.faults.pipeline import DIRECTIONS, PIPED_READ_SIZE, Pipe
from pytest_multiconn.faults.table import FaultEntry, FaultTable, install
from pytest_multiconn.faults.toxics import Stage, Toxic
from pytest_multiconn.proxy.side import PAUSE_SPLICE_FULL, Side
from pytest_multiconn.proxy.splice import Splice, make_pipe
from pytest_multiconn.proxy.transcript import proxy_transcript


class PairProxy(Protocol):
    """What a proxied connection reads of its proxy (its settings) and calls (notify)."""

    high_water: int
    low_water: int
    transcript_limit: int
    seed: int
    target: ServerAddress

    @property
    def loop(self) -> Loop: ...

    def notify(self) -> None: ...


@dataclass(eq=False)
class Relay:
    """What the pairs of one proxy share with it (loop thread): the fault table, whether new
    connections start held, whether a bulk direction may splice (off for good once the
    kernel refused), what closed kernel pipes moved, and where a pair reports its ends."""

    faults: FaultTable[Toxic]
    hold_new: bool
    splice: bool
    #: The proxy's accounting of a closed client socket (ServerBase's connection count).
    client_closed: Callable[[Connection], None]
    #: Called once both sides of a pair are closed.
    pair_done: Callable[[Pair], None]
    spliced_bytes: int = 0  # moved by splice in kernel pipes closed so far (diagnostics)


class Pair:
    """The client side, the server side and the pipelines between them (loop thread)."""

    def __init__(self, proxy: PairProxy, number: int, sock: socket.socket, addr: SocketAddress,
                 target_family: socket.AddressFamily, *, relay: Relay) -> None:
        self.proxy = proxy
        self.relay = relay
        self.number = number
        self.transcript = proxy_transcript(proxy.transcript_limit)
        self.pipes: dict[str, Pipe | None] = {"upstream": None, "downstream": None}
        # The kernel pipe of each spliced direction (keyed by direction, like pipes).
        self.splices: dict[str, Splice | None] = {"upstream": None, "downstream": None}
        self.spliced_bytes = {"upstream": 0, "downstream": 0}  # by splice, in closed pipes
        self.connected = False
        self.done = False
        self.claimed = False  # returned by FaultProxy.wait_for_connection()
        self.resetting = False
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.end_reason = ""
        # May raise EMFILE: the proxy then refuses this client and backs off accepting.
        upstream = socket.socket(target_family, socket.SOCK_STREAM)
        try:
            if target_family != socket.AF_UNIX:
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            kw: dict[str, Any] = {"loop": proxy.loop, "high_water": proxy.high_water,
                                  "low_water": proxy.low_water}
            self.client = Side(self, "client", sock, addr, **kw)
            self.server = Side(self, "server", upstream, proxy.target, **kw)
        except BaseException:
            upstream.close()
            raise
        self.client.other = self.server
        self.server.other = self.client

    def __repr__(self) -> str:
        if self.done:
            state = f"closed ({self.end_reason})"
        else:
            state = "open" if self.connected else "connecting"
        return f"<proxied connection #{self.number} {state} client={self.client.peer!r}>"

    def sides(self) -> tuple[Side, Side]:
        return self.client, self.server

    def source(self, direction: str) -> Side:
        return self.client if direction == "upstream" else self.server

    # -- what the sides ask (SidePair) ----------------------------------------------------------
    def setup(self) -> None:
        relay = self.relay
        for entry in relay.faults:
            self.add(entry)
        if relay.hold_new:
            for d in DIRECTIONS:
                self.pipe(d).hold()

    def connect_upstream(self) -> None:
        self.server.connect(self.proxy.target)

    def upstream_connected(self) -> None:
        self.connected = True
        for pipe in self.pipes.values():
            if pipe is not None:
                pipe.dst_connected()  # what its gate kept while the connect was in progress
        self.proxy.notify()

    # -- what the pipelines ask (PipePair) ------------------------------------------------------
    def held_changed(self) -> None:
        self.proxy.notify()

    def pipe(self, direction: str) -> Pipe:
        pipe = self.pipes[direction]
        if pipe is None:
            src = self.source(direction)
            splice = self.splices[direction]
            if splice is not None:
                self.unsplice(splice)  # the pipe-drain rule: see the essay in splice.py
            proxy = self.proxy
            pipe = self.pipes[direction] = Pipe(
                self, direction, src, src.other, loop=proxy.loop, high_water=proxy.high_water,
                low_water=proxy.low_water, passed=src.bytes_in,
            )
            src.pipe = pipe
            # Bound what one read can hand the stages (see "Fairness" in pipeline.py).
            src.read_size = min(src.read_size, PIPED_READ_SIZE)
        return pipe

    def maybe_fast_path(self, direction: str) -> None:
        """Drop a pipeline that has no stage, no hold and nothing in flight."""
        pipe = self.pipes[direction]
        if (pipe is not None and not pipe.stages and not pipe.held and pipe.idle()
                and not pipe.cut and pipe.closing is None and not pipe.backlog
                and pipe.ending is None):
            self.pipes[direction] = None
            src = self.source(direction)
            src.pipe = None
            src.read_size = type(src).read_size

    # -- the zero-copy relay (SplicePair) ---------------------------------------------------------
    def maybe_splice(self, src: Side) -> None:
        """Relay what ``src`` reads by splice() from now on, if nothing stands in the way."""
        dst = src.other
        if (not self.relay.splice or src.pipe is not None or src.splice is not None
                or self.done or not self.connected or src.closed or dst.closed
                or src.eof_received or src.connecting or dst.phase is not Phase.OPEN
                or dst.buffered or dst.output_held
                or dst.max_send is not None or src.pause_bits):
            return
        made = make_pipe()
        if made is None:
            return
        r, w, size = made
        splice = Splice(self, src, r, w, size)
        self.splices[src.direction] = splice
        src.splice = dst.splice_in = splice

    def unsplice(self, splice: Splice) -> None:
        """Back to the user-space path: the pipe's bytes go to the destination first."""
        src, dst = splice.src, splice.dst
        src.splice = None
        dst.splice_in = None
        self.splices[src.direction] = None
        self.spliced_bytes[src.direction] += splice.moved
        self.relay.spliced_bytes += splice.moved
        data = splice.take() if splice.pending and not dst.closed else b""
        splice.pending = 0
        splice.close()
        if not dst.closed:
            dst.update_interest()
            if data:
                dst.write(data)
            if dst.finish_pending and not dst.buffered:
                dst.close(reason="finished")
        if not src.closed and src.pause_bits & PAUSE_SPLICE_FULL:
            # An end-of-stream splice saw is seen again by recv(): it stays readable.
            src.resume_for(PAUSE_SPLICE_FULL)

    def splice_unsupported(self, splice: Splice) -> None:
        """This kernel (or sandbox) cannot splice these sockets: stay in user space, for good."""
        self.relay.splice = False
        self.unsplice(splice)

    def splice_eof(self, splice: Splice) -> None:
        """End-of-stream spliced with the pipe empty: forward it as the user-space path does."""
        src = splice.src
        self.unsplice(splice)
        if src.closed or src.eof_received:
            return
        src.deliver_eof()

    def spliced(self) -> dict[str, int]:
        """Bytes each direction moved by splice so far (tests and diagnostics)."""
        moved = dict(self.spliced_bytes)
        for direction, splice in self.splices.items():
            if splice is not None:
                moved[direction] += splice.moved
        return moved

    # -- faults -----------------------------------------------------------------------------------
    def add_stage(self, entry: FaultEntry[Toxic], direction: str) -> None:
        stage = install(entry, direction, seed=self.proxy.seed, number=self.number,
                        pipe=self.pipe(direction), transcript=self.transcript)
        if stage is not None and self.done:
            stage.stop()  # leaving splice mode flushed the last bytes and the pair closed

    # -- FaultHolder: what the proxy's fault table asks of a live pair --------------------------
    def add(self, entry: FaultEntry[Toxic]) -> None:
        for d in entry.directions():
            self.add_stage(entry, d)

    def update(self, name: str, fault: Toxic) -> None:
        for stage in list(self.stages_named(name)):
            stage.toxic = fault
            stage.updated()

    def remove(self, name: str) -> None:
        self.remove_stages(name)

    def stages_named(self, name: str) -> Iterator[Stage]:
        for pipe in self.pipes.values():
            if pipe is not None:
                for stage in pipe.stages:
                    if getattr(stage, "toxic_name", None) == name:
                        yield stage

    def remove_stages(self, name: str) -> None:
        for direction, pipe in self.pipes.items():
            if pipe is not None:
                for stage in list(pipe.stages):
                    if getattr(stage, "toxic_name", None) == name:
                        pipe.remove(stage.name)
                self.maybe_fast_path(direction)

    # -- ending ---------------------------------------------------------------------------------
    def finish(self, reason: str) -> None:
        """Close both sides after flushing what they already have to send."""
        if self.done:
            return
        self.transcript.record("note", note=f"closing: {reason}")
        self.end_reason = self.end_reason or reason
        for side in self.sides():
            if not side.closed:
                side.finish()

    def reset(self, reason: str) -> None:
        """Close both sides with an RST."""
        if self.done:
            return
        self.end_reason = self.end_reason or reason
        self.resetting = True  # side_lost forwards the first side's reset to the other
        for side in self.sides():
            side.reset()

    def cut(self, reason: str) -> None:
        """Close both sides at once, dropping whatever was pending."""
        self.end_reason = self.end_reason or reason
        for side in self.sides():
            side.close(reason=reason)

    def side_lost(self, side: Side, exc: BaseException | None) -> None:
        other = side.other
        # Close kernel pipes with the sockets: the one this side wrote out has no destination
        # any more; the one it read from stays only while it has bytes for a live other side.
        splice_in = self.splices[other.direction]
        if splice_in is not None:
            self.unsplice(splice_in)
        splice = self.splices[side.direction]
        if splice is not None and (not splice.pending or other.closed):
            self.unsplice(splice)
        if not other.closed:
            if exc is not None or self.resetting:
                # Linux reports a peer's RST as ECONNRESET on the next recv/send (EPIPE if we
                # wrote after it); closing our other socket with SO_LINGER {1, 0} makes the
                # kernel send an RST instead of a FIN, so the error crosses the proxy.  A failed
                # connect to the target is forwarded the same way: the client's connection is
                # reset, which is what it would have seen without the proxy, minus the refusal.
                self.end_reason = self.end_reason or f"{side.role}: {type(exc).__name__}"
                self.transcript.record("note", note=f"{side.role} failed: forwarding RST")
                other.reset()
            else:
                pipe = self.pipes[side.direction]
                if pipe is None or pipe.idle():
                    other.finish()
                else:
                    pipe.closing = f"{side.role} closed"
        if side.role == "client":
            self.relay.client_closed(side)
        if self.client.closed and self.server.closed and not self.done:
            self.done = True
            self.closed_at = time.monotonic()
            self.end_reason = self.end_reason or side.close_reason
            for pipe in self.pipes.values():
                if pipe is not None:
                    pipe.stop()
            self.relay.pair_done(self)


__all__ = ["Pair", "PairProxy", "Relay"]
