"""The soak: servers, a TLS server and fault proxies under a seeded random schedule of faults.

For a bounded time (``--duration``, default 10 minutes) it runs a plain :class:`EchoServer`,
a TLS ``EchoServer``, a faulty ``EchoServer`` (stream faults switched on and off under
traffic, and its listener paused) and a :class:`FaultProxy` in front of each
of the first two, all in a *child process* (the server process), and drives them from this
one (the clients).  A seeded random schedule of phases throws at them every client fault,
every server fault and every toxic (added, updated and removed while traffic flows, through
commands over a socketpair), with thousands of short connections and some long ones, and
checks invariants as it goes:

* every byte of every exchange that must survive its faults is intact (the client compares);
* no connection is stuck past its bound: every client run ends within its timeout (``BOUND``,
  plus what a phase's toxics imply for the transfer time: :func:`toxic_bound`), and every
  server and proxy is back to zero open connections within ``BOUND`` seconds of each phase;
* no loop thread recorded an error (``check()``);
* the server process's RSS (``VmRSS`` in ``/proc/<pid>/status``) grows less than 5 MiB after
  warm-up;
* the server process's CPU (``/proc/<pid>/stat``) is near 0 in idle windows between phases;
* descriptors and threads are back to their baseline once everything stopped, in the server
  process (counted there) and in this one.

Why a child process: the issue's memory bound is on the servers and proxies, and in one
process the clients' own buffers (1 MiB messages, TLS state, results) would be measured with
them; the clients would also share the servers' GIL, so their CPU would count as the servers'
and slow them down.  The child dies with this process: it asks the kernel for SIGKILL when its
parent goes (``PR_SET_PDEATHSIG``), exits when the socketpair closes, every command waits for
its answer a bounded time, and the child is killed when one does not come.

Any violation prints the seed and a replay command at once; a summary table comes at the end,
and the exit status is 1 if anything was violated.  The schedule (which phase, which fault,
which parameters) is a function of the seed; the timing of a run is not, so a replay repeats
the same schedule under whatever load the machine has then.

    python benchmarks/soak.py --duration 60 --seed 1234
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from pytest_multiconn import (
    EchoServer,
    FaultProxy,
    MultiConnClient,
    TLSConfig,
)
from pytest_multiconn.core.connection import DEFAULT_HIGH_WATER
from pytest_multiconn.faults import (
    Burst,
    ClientFault,
    ClientReset,
    ConnectClose,
    Garbage,
    HalfClose,
    NeverClose,
    NeverRead,
    PartialSend,
    Silent,
    SlowReader,
)
from pytest_multiconn.faults.pipeline import PIPED_READ_SIZE, Direction
from pytest_multiconn.proxy import (
    Bandwidth,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
    Toxic,
)

#: Bound, in seconds, on every client run and on every server getting back to idle.
BOUND = 15.0
#: Growth of RSS allowed after warm-up, in bytes, and how many phases each median spans.
RSS_LIMIT = 5 * 1024 * 1024
RSS_WINDOW = 5
#: CPU time / wall time allowed in an idle window.
IDLE_CPU_LIMIT = 0.05
IDLE_WINDOW = 1.0

# What a phase's toxics imply for its transfer time (toxic_bound()).  A Slicer turns every
# average_size bytes into one send() of its own, and that, not the bytes, is the cost: on the
# 2 vCPU shared machine (load average 4-5, other helpers' tests running) the proxy made about
# 54,000 such writes per second (11 connections x 1 MiB cut into 8-byte pieces: 1,441,792
# writes in 26.7-27.4 s, whether the clients ran in the proxy's process or not) and about
# 100,000 for one connection.  The bound assumes 10,000 per second, 5x below what was measured
# loaded, so it is a bound on being stuck, not a speed target.
SLOW_WRITES_PER_S = 10_000
#: At most this many Slicer pieces per direction in one phase: the schedule shortens a phase
#: that asks for more (fewer connections, or a shorter message), so that one seed's 1-byte
#: slicer over 30 connections of 1 MiB does not turn into a 30-minute phase.
MAX_PIECES = 100_000
#: What a Bandwidth toxic is assumed to reach of its rate under load (it is timer-paced).
BANDWIDTH_SHARE = 0.5
#: Latency, jitter and SlowClose delays are at most 50 ms each per chunk, pipelined (a
#: direction keeps up to its high-water mark in flight): well under a second per direction.
DELAY_SLACK = 1.0
#: TLS on the wire: record headers and tags (22 of every 16,384 bytes, 1%) and the handshake
#: (the certificate chain: a few KiB per connection).
TLS_RECORD_OVERHEAD = 1.01
TLS_HANDSHAKE_BYTES = 8 * 1024
#: What one direction's pipeline holds at most before its source stops being read (the
#: high-water mark, plus the one read that crossed it): what a toxic removed under traffic
#: can hand on at once.
PIPE_HOLD = DEFAULT_HIGH_WATER + PIPED_READ_SIZE

#: The bytes of the warm-up's one-byte-a-write peak through the faulty server
#: (``Slicer(average_size=1)``): its pipeline's backlog at its largest.
SLICED_PEAK = 1_000

#: Seconds the child may take to start its servers, to answer one command, and to stop.
CHILD_START = 60.0
CHILD_COMMAND = 30.0
CHILD_SETTLE = 5 * (BOUND + 5.0) + 30.0
CHILD_STOP = 60.0

Rng = random.Random

# -- the fault catalogue: (name, factory, bytes must survive) ---------------------------------
# Factories take the phase's rng, so parameters are part of the seeded schedule.  Keyword
# arguments throughout: other parts of the project are changing positional orders.

SOAK_CLIENT_FAULTS: list[tuple[str, Callable[[Rng], ClientFault]]] = [
    ("partial_send", lambda r: PartialSend(max_chunk=r.choice([1, 7, 512, 4096]))),
    ("slow_reader", lambda r: SlowReader(bytes_per_second=r.choice([256 * 1024, 1 << 20]))),
    ("never_read", lambda r: NeverRead(size=r.choice([1 << 20, 4 << 20]), stall=0.2)),
    ("never_close", lambda r: NeverClose()),
    ("silent", lambda r: Silent()),
    ("half_close", lambda r: HalfClose()),
    ("client_reset", lambda r: ClientReset(at=r.choice(["before", "mid", "after"]))),
    ("garbage", lambda r: Garbage(size=r.choice([1024, 64 * 1024, 1 << 20]))),
    ("connect_close", lambda r: ConnectClose()),
    ("burst", lambda r: Burst(connections=r.choice([50, 200]))),
]


@dataclass(frozen=True)
class ServerFaults:
    """What a server-fault phase does to the faulty server: stream faults, each on a direction
    (``server.add(fault, direction=...)``), or its listener paused (``pause_accepting()``)."""

    faults: tuple[tuple[Toxic, Direction], ...] = ()
    accepting: bool = True

    def __repr__(self) -> str:
        if not self.accepting:
            return "pause_accepting()"
        return ", ".join(f"{fault!r} {direction}" for fault, direction in self.faults)


def _on(fault: Toxic, direction: Direction = "downstream") -> ServerFaults:
    return ServerFaults(((fault, direction),))


# Server faults, and whether a plain exchange still gets every byte back.
SOAK_SERVER_FAULTS: list[tuple[str, Callable[[Rng], ServerFaults], bool]] = [
    ("latency", lambda r: _on(Latency(ms=r.choice([1, 20]), jitter=5)), True),
    ("slicer", lambda r: _on(Slicer(average_size=r.choice([1, 3, 100, 1400]))), True),
    # A stall that reads and drops (the client's EOF held too), or one that stops reading
    # once its high-water mark of held bytes is reached.
    ("stall", lambda r: _on(Timeout(hold_eof=True) if r.random() < 0.5 else
                            Latency(ms=60_000), "upstream"), False),
    ("limit_data", lambda r: _on(LimitData(bytes=r.choice([10, 1000]), reset=r.random() < 0.5)),
     False),
    ("accept_then_close", lambda r: _on(LimitData(bytes=0, reset=r.random() < 0.5)), False),
    ("stop_accepting", lambda r: ServerFaults(accepting=False), False),
]

# Toxics: a factory, an update (new parameters), and whether bytes survive.
SOAK_TOXICS: list[tuple[str, Callable[[Rng], Toxic], Callable[[Rng], dict[str, Any]], bool]] = [
    ("latency", lambda r: Latency(ms=r.choice([1, 5, 20]), jitter=1),
     lambda r: {"ms": r.choice([0, 2, 10])}, True),
    ("bandwidth", lambda r: Bandwidth(rate=r.choice([500, 5000])),
     lambda r: {"rate": r.choice([1000, 20000])}, True),
    ("slicer", lambda r: Slicer(average_size=r.choice([1, 16, 512]), size_variation=0),
     lambda r: {"average_size": r.choice([8, 1024])}, True),
    ("slow_close", lambda r: SlowClose(delay_ms=r.choice([1, 50])),
     lambda r: {"delay_ms": r.choice([0, 10])}, True),
    ("limit_data", lambda r: LimitData(bytes=r.choice([1, 100, 10000])),
     lambda r: {"bytes": r.choice([50, 5000])}, False),
    ("timeout", lambda r: Timeout(ms=r.choice([0, 50])),
     lambda r: {"ms": r.choice([10, 100])}, False),
    ("reset_peer", lambda r: ResetPeer(timeout_ms=r.choice([0, 20])),
     lambda r: {"timeout_ms": r.choice([5, 50])}, False),
]  # fmt: skip


# -- measurements ------------------------------------------------------------------------------


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc: measure as is
        return None


LIBC = _libc()
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
PR_SET_PDEATHSIG = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pin_allocator() -> None:
    """Fix glibc's mmap threshold at 128 KiB and use one arena (in the server process).

    Why: the servers read 64 KiB at a time and buffer up to their high-water marks, and a
    slow reader's output buffer can grow past 1 MiB.  glibc raises its mmap threshold each
    time such a block is freed, after which large blocks come from the heap and stay in RSS
    as free space; growth would then measure the allocator's caching instead of what the
    servers keep.
    """
    if LIBC is not None:
        LIBC.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        # One malloc arena for every thread: each loop thread may otherwise get an arena of
        # its own, and the free space scattered over several arenas shows as growth that
        # malloc_trim cannot give back.
        LIBC.mallopt(M_ARENA_MAX, 1)


def trim() -> tuple[int, int]:
    """Hand free heap pages back, so that RSS counts what is kept, not what was freed; return
    ``(Python memory blocks in use, objects the collector tracks)`` in this process.

    The two counts tell a leak from fragmentation: objects that are kept show as more blocks
    and objects, while RSS that grows with both flat is the allocators' free space (pymalloc's
    partly used arenas, glibc's heap) that cannot be handed back."""
    gc.collect()
    if LIBC is not None:
        LIBC.malloc_trim(0)
    return sys.getallocatedblocks(), len(gc.get_objects())


def census() -> dict[str, int]:
    """How many objects of each type the collector tracks in this process (after a collection):
    the soak compares two censuses to name what a growing heap holds."""
    gc.collect()
    counts: Counter[str] = Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    return dict(counts)


def rss_of(pid: int) -> int:
    """Resident bytes of process ``pid`` (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name, in parentheses, may hold spaces: split after its closing one.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    """Threads of this process as the kernel sees them (Python's and any other)."""
    return len(os.listdir("/proc/self/task"))


# -- the server process ------------------------------------------------------------------------

SERVER_KEYS = ("echo", "tls_echo", "faulty", "proxy", "tls_proxy")


def _die_with_parent(parent: int) -> None:
    if LIBC is not None:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent went before prctl: no signal will come
        os._exit(3)


def serve(fd: int, parent: int) -> int:
    """The server process: start the servers, answer commands until ``stop`` (or EOF)."""
    _die_with_parent(parent)
    pin_allocator()
    conn = PipeEnd(fd)
    fds0, threads0 = open_fds(), os_threads()
    if not conn.poll(CHILD_START):
        return 2
    seeds: list[int] = conn.recv()
    tls = TLSConfig()
    with contextlib.ExitStack() as stack:
        echo = stack.enter_context(EchoServer())
        tls_echo = stack.enter_context(EchoServer(tls=tls))
        faulty = stack.enter_context(EchoServer(seed=seeds[0]))
        proxy = stack.enter_context(FaultProxy(echo.address, seed=seeds[1]))
        tls_proxy = stack.enter_context(FaultProxy(tls_echo.address, seed=seeds[2]))
        servers: dict[str, Any] = dict(zip(SERVER_KEYS, [echo, tls_echo, faulty, proxy,
                                                         tls_proxy], strict=True))
        proxies: dict[str, FaultProxy] = {"proxy": proxy, "tls_proxy": tls_proxy}

        def settle(bound: float) -> list[str]:
            """Every server back to zero open connections, and no loop error."""
            problems = []
            for server in servers.values():
                try:
                    server.wait_for_idle(bound)
                except Exception as exc:  # noqa: BLE001 - reported as a violation
                    problems.append(f"stuck past {bound}s: {exc}".splitlines()[0])
                try:
                    server.check()
                except Exception as exc:  # noqa: BLE001 - reported as a violation
                    problems.append(f"loop error in {server.name}: {exc}".splitlines()[0])
            return problems

        def set_faults(wanted: ServerFaults) -> None:
            """The faulty server's faults become ``wanted`` (removed ones hand on what they
            held: a stall's held end-of-stream too, so its connections can close)."""
            faulty.clear()
            for fault, direction in wanted.faults:
                faulty.add(fault, direction=direction)
            if wanted.accepting:
                faulty.resume_accepting()
            else:
                faulty.pause_accepting()

        commands: dict[str, Callable[..., Any]] = {
            "add": lambda key, toxic, direction: proxies[key].add(toxic, direction=direction),
            "update": lambda key, name, params: proxies[key].update(name, **params),
            "remove": lambda key, name: proxies[key].remove(name),
            "set_faults": set_faults,
            "settle": settle,
            "trim": trim,
            "census": census,
        }
        conn.send({
            "addresses": {k: s.address for k, s in servers.items()},
            "names": {k: s.name for k, s in servers.items()},
            "ca_pem": tls.ca_pem,
        })
        while True:
            try:
                cmd, args = conn.recv()
            except EOFError:  # the parent went away: stop everything and go
                return 1
            if cmd == "stop":
                break
            try:
                reply: tuple[str, Any] = ("ok", commands[cmd](*args))
            except Exception as exc:  # noqa: BLE001 - the parent reports it as a violation
                reply = ("error", f"{cmd}: {type(exc).__name__}: {exc}".splitlines()[0])
            conn.send(reply)
    # Everything stopped: what is left of descriptors and threads (the socketpair end was
    # open at the baseline too).
    gc.collect()
    conn.send(("ok", {"fds": (fds0, open_fds()), "threads": (threads0, os_threads()),
                      "thread_names": [t.name for t in threading.enumerate()]}))
    conn.close()
    return 0


class ServerProcessError(RuntimeError):
    """The server process failed a command, did not answer in time (it was killed), or died."""


class ServerProcess:
    """This process's end of the server process: start it, send it commands, stop it."""

    def __init__(self, seeds: list[int]) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--serve-fd", str(theirs.fileno()),
                 "--parent", str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            self.conn = PipeEnd(os.dup(ours.fileno()))
        self.pid = self.proc.pid
        #: Python memory blocks and tracked objects of the child at the last rss().
        self.blocks = self.objects = 0
        try:
            self.conn.send(seeds)
            self.info: dict[str, Any] = self._reply("start", CHILD_START, raw=True)
        except BaseException:
            self.kill()
            raise
        self.addresses: dict[str, Any] = self.info["addresses"]
        self.names: dict[str, str] = self.info["names"]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=self.info["ca_pem"].decode())
        #: A client context that trusts the server process's CA.
        self.client_tls = ctx

    def _reply(self, what: str, timeout: float, *, raw: bool = False) -> Any:
        reply: Any = None
        try:
            ready = self.conn.poll(timeout)
            if ready:
                reply = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise ServerProcessError(f"the server process died ({what}): {exc!r}, "
                                     f"exit status {self.proc.poll()}") from exc
        if not ready:
            self.kill()
            raise ServerProcessError(f"the server process did not answer {what} within "
                                     f"{timeout:g}s: killed")
        if raw:
            return reply
        status, value = reply
        if status != "ok":
            raise ServerProcessError(f"in the server process: {value}")
        return value

    def call(self, cmd: str, *args: Any, timeout: float = CHILD_COMMAND) -> Any:
        if self.proc.poll() is not None:
            raise ServerProcessError(f"the server process is gone (exit status "
                                     f"{self.proc.returncode}); cannot {cmd}")
        try:
            self.conn.send((cmd, args))
        except OSError as exc:
            self.kill()
            raise ServerProcessError(f"the server process died ({cmd}): {exc!r}") from exc
        return self._reply(cmd, timeout)

    def rss(self) -> int:
        self.blocks, self.objects = self.call("trim")
        return rss_of(self.pid)

    def cpu(self) -> float:
        return cpu_of(self.pid)

    def stop(self) -> dict[str, Any]:
        """Stop the servers; the child's descriptor and thread counts after they stopped."""
        try:
            self.conn.send(("stop", ()))
            stopped: dict[str, Any] = self._reply("stop", CHILD_STOP)
            self.proc.wait(CHILD_STOP)
        finally:
            self.kill()
        return stopped

    def kill(self) -> None:
        """Make sure the child is gone (bounded: SIGKILL cannot be refused)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(CHILD_STOP)
        self.conn.close()


@dataclass
class RemoteProxy:
    """A FaultProxy of the server process, as the phases use it."""

    servers: ServerProcess
    key: str

    @property
    def address(self) -> Any:
        return self.servers.addresses[self.key]

    @property
    def name(self) -> str:
        return self.servers.names[self.key]

    def add(self, toxic: Toxic, *, direction: str) -> str:
        name: str = self.servers.call("add", self.key, toxic, direction)
        return name

    def update(self, name: str, **params: Any) -> None:
        self.servers.call("update", self.key, name, params)

    def remove(self, name: str) -> None:
        self.servers.call("remove", self.key, name)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Tally:
    seed: int
    duration: float
    phases: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    bytes_echoed: int = 0
    violations: list[str] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    #: (phase, Python blocks, tracked objects) of the server process at warm-up and last.
    heap_warm: tuple[int, int, int] | None = None
    heap_last: tuple[int, int, int] | None = None
    census_warm: dict[str, int] | None = None
    #: The types whose count grew most between warm-up and the end, with the growth.
    census_grown: list[tuple[str, int]] = field(default_factory=list)
    rss_baseline: float | None = None
    rss_reported: float = 0.0
    rss_growth: float = 0.0
    idle_cpu_max: float = 0.0
    idle_windows: int = 0
    longest_bound: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sample_heap(self, phase: int, blocks: int, objects: int, *, warm: bool) -> bool:
        """Note the heap once warm; True at the first warm sample (take a census then)."""
        if not warm:
            return False
        self.heap_last = (phase, blocks, objects)
        if self.heap_warm is None:
            self.heap_warm = self.heap_last
            return True
        return False

    def sample_rss(self, phase: int, after: str, current: int, *, warm: bool) -> None:
        """RSS after each phase: the median of the first ``RSS_WINDOW`` samples once ``warm``
        is the baseline, and the median of the last ``RSS_WINDOW`` must stay within
        ``RSS_LIMIT`` of it.  Medians, because one phase (a million 1-byte slices queued by
        a Slicer) can leave the heap fragmented for a while without anything leaking; a leak
        moves the median and keeps it there."""
        if not warm:
            return
        self.rss_samples.append(current)
        if len(self.rss_samples) < RSS_WINDOW:
            return
        if self.rss_baseline is None:
            self.rss_baseline = self.rss_reported = statistics.median(self.rss_samples)
            return
        recent = statistics.median(self.rss_samples[-RSS_WINDOW:])
        self.rss_growth = max(self.rss_growth, recent - self.rss_baseline)
        if recent - self.rss_reported > RSS_LIMIT:
            self.violate(phase, f"server process RSS {(recent - self.rss_baseline) / 2**20:+.1f}"
                         f" MiB since warm-up (median of the last {RSS_WINDOW} phases), after "
                         f"{after} (limit {RSS_LIMIT / 2**20:.0f} MiB; {self.connections:,} "
                         "connections so far)")
            self.rss_reported = recent  # once per 5 MiB of growth, not every phase

    def violate(self, phase: int, what: str) -> None:
        line = f"phase {phase}: {what}"
        with self.lock:
            self.violations.append(line)
        print(
            f"VIOLATION {line}\n  seed {self.seed}; replay: python benchmarks/soak.py "
            f"--seed {self.seed} --duration {self.duration:g}",
            flush=True,
        )


@dataclass
class Targets:
    """What the phases aim at: the server process's servers, by address."""

    servers: ServerProcess
    proxy: RemoteProxy
    tls_proxy: RemoteProxy

    @property
    def echo(self) -> Any:
        return self.servers.addresses["echo"]

    @property
    def tls_echo(self) -> Any:
        return self.servers.addresses["tls_echo"]

    @property
    def faulty(self) -> Any:
        return self.servers.addresses["faulty"]

    @property
    def tls(self) -> ssl.SSLContext:
        return self.servers.client_tls


def messages(rng: Rng, long: bool) -> list[bytes]:
    if long:
        return [rng.randbytes(rng.choice([256 << 10, 1 << 20]))]
    return [rng.randbytes(rng.randint(1, 2048)) for _ in range(rng.randint(1, 3))]


def run_client(
    tally: Tally,
    phase: int,
    what: str,
    address: Any,
    *,
    n: int,
    msgs: list[bytes],
    must_echo: bool,
    tls: Any = None,
    faults: list[ClientFault] | None = None,
    seed: int,
    bound: float = BOUND,
) -> None:
    """One client run; checks its bound and, when ``must_echo``, every byte."""
    started = time.monotonic()
    with tally.lock:
        tally.longest_bound = max(tally.longest_bound, bound)
    try:
        client = MultiConnClient(
            address, n, msgs, timeout=bound, tls=tls, faults=faults or (), seed=seed
        )
        results = client.run()
    except Exception as exc:  # noqa: BLE001 - a violation to report, not a crash of the soak
        tally.violate(phase, f"{what}: client raised {type(exc).__name__}: {exc}")
        return
    elapsed = time.monotonic() - started
    with tally.lock:
        tally.connections += len(results)
        tally.bytes_echoed += sum(r.received for r in results if r.matched)
    if elapsed > bound + 5:
        tally.violate(phase, f"{what}: a client run took {elapsed:.1f}s (bound {bound:.1f}s)")
    if must_echo and not results.ok:
        bad = results.failed[0]
        tally.violate(phase, f"{what}: {len(results.failed)}/{len(results)} failed "
                      f"(bound {bound:.1f}s): {bad}")


@contextlib.contextmanager
def background(fn: Callable[[], None], bound: float) -> Iterator[None]:
    thread = threading.Thread(target=fn, name="soak-traffic", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(bound * 3)
        if thread.is_alive():
            raise RuntimeError("soak traffic thread did not end: the soak itself is stuck")


def phase_clean(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """Short and long connections to every server, direct and through the proxies."""
    plan = [
        ("echo", t.echo, None),
        ("tls-echo", t.tls_echo, t.tls),
        ("proxy", t.proxy.address, None),
        ("tls-proxy", t.tls_proxy.address, t.tls),
        ("faulty(no faults)", t.faulty, None),
    ]
    for what, address, tls in plan:
        long = rng.random() < 0.15
        n = rng.randint(2, 4) if long else rng.randint(20, 120 if tls is None else 40)
        run_client(tally, phase, what, address, n=n, msgs=messages(rng, long), must_echo=True,
                   tls=tls, seed=rng.getrandbits(32))
    return "every server, direct and proxied"


def phase_client_fault(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """A client fault against a good server (direct or proxied, plain or TLS): it must pass."""
    name, make = rng.choice(SOAK_CLIENT_FAULTS)
    what, address, tls = rng.choice([
        ("echo", t.echo, None),
        ("tls-echo", t.tls_echo, t.tls),
        ("proxy", t.proxy.address, None),
    ])
    fault = make(rng)
    tally.faults[f"client:{name}"] += 1
    run_client(tally, phase, f"{name} -> {what}", address, n=rng.randint(1, 4),
               msgs=messages(rng, False), must_echo=True, tls=tls, faults=[fault],
               seed=rng.getrandbits(32))
    return f"{fault!r} -> {what}"


def phase_server_fault(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """A server fault switched on under traffic; bytes must survive the ones that keep them."""
    name, make, keeps_bytes = rng.choice(SOAK_SERVER_FAULTS)
    tally.faults[f"server:{name}"] += 1
    fault = make(rng)
    t.servers.call("set_faults", fault)
    try:
        n = 3 if name == "stop_accepting" else rng.randint(5, 40)
        msgs = messages(rng, False)
        timeout_run = BOUND if keeps_bytes else 3.0
        slicers = [f for f, _ in fault.faults if isinstance(f, Slicer)]
        if slicers:
            # One write per average_size bytes (toxic_bound()): 40 connections of 3 x 2 KiB
            # at average_size=1 are 245,760 writes.  Seed 165461797, phase 58, had the flat
            # 15 s bound call such a run stuck at 7,000 writes a second, with three soaks and
            # other tests sharing the 2 vCPUs.
            writes = n * sum(len(m) for m in msgs) / slicers[0].average_size
            timeout_run += 2 * writes / SLOW_WRITES_PER_S
            with tally.lock:
                tally.longest_bound = max(tally.longest_bound, timeout_run)
        started = time.monotonic()
        client = MultiConnClient(t.faulty, n, msgs, timeout=timeout_run,
                                 seed=rng.getrandbits(32))
        results = client.run()
        elapsed = time.monotonic() - started
        with tally.lock:
            tally.connections += len(results)
            tally.bytes_echoed += sum(r.received for r in results if r.matched)
        if elapsed > timeout_run + 5:
            tally.violate(phase, f"server fault {name}: client run took {elapsed:.1f}s")
        if keeps_bytes and not results.ok:
            tally.violate(phase, f"server fault {name}: {results.failed[0]}")
    finally:
        t.servers.call("set_faults", ServerFaults())
    return f"{fault!r}, bound {timeout_run:.0f}s" if keeps_bytes else repr(fault)


def _wire(msgs: list[bytes], tls: bool) -> float:
    """Bytes one connection puts on the wire each way for ``msgs``."""
    size = sum(len(m) for m in msgs)
    return size * TLS_RECORD_OVERHEAD + TLS_HANDSHAKE_BYTES if tls else float(size)


def toxic_bound(
    toxics: list[Toxic], updates: list[dict[str, Any]], directions: int, n: int,
    msgs: list[bytes], *, tls: bool,
) -> tuple[int, list[bytes], float]:
    """Shorten a toxics phase that would ask too much, and bound the time it may take.

    Returns the connection count and messages to use and the client run's bound: ``BOUND``
    plus what the toxics imply, with every parameter at its worst of the initial value and the
    update (the update comes right after the traffic starts).  Per direction they act on:

    * Slicer: one write per piece, ``n * wire / average_size`` pieces, at
      ``SLOW_WRITES_PER_S``; counted twice, because a piece sent upstream comes back from the
      echo server as a write of its own, and a proxy relays each read as one write.  Seed
      2687017455, phase 37, is the case that showed it: Slicer(average_size=512) updated to
      8, downstream, 11 connections x 1 MiB, is 11 * 2**20 / 8 = 1,441,792 writes; at the
      54,000 per second measured loaded that is 27 s, which the flat 15 s bound called stuck
      (the proxy was writing all along).  Now ``MAX_PIECES`` cuts it to one connection
      whose message is cut to 783,968 bytes (800,000 on the wire with TLS: 100,000 pieces),
      bound 15 + 2 * 100,000 / 10,000 + 1 (latency) = 36 s.
    * Bandwidth: ``wire / rate`` (each connection has its own stage, so connections run side
      by side), at ``BANDWIDTH_SHARE`` of the rate.
    * Latency and SlowClose: ``DELAY_SLACK``.
    """
    sizes = [t.average_size for t in toxics if isinstance(t, Slicer)]
    sizes += [u["average_size"] for t, u in zip(toxics, updates, strict=True)
              if isinstance(t, Slicer) and "average_size" in u]
    rates = [t.bps for t in toxics if isinstance(t, Bandwidth)]
    rates += [u["rate"] * 1000.0 for t, u in zip(toxics, updates, strict=True)
              if isinstance(t, Bandwidth) and "rate" in u]
    bound = BOUND
    if sizes:
        smallest = min(sizes)
        cap = MAX_PIECES * smallest  # wire bytes the phase may slice, all connections
        if n * _wire(msgs, tls) > cap:
            n = max(1, int(cap // _wire(msgs, tls)))
        if n * _wire(msgs, tls) > cap:  # one connection is too much: shorten its message
            keep = max(1, int((cap - (TLS_HANDSHAKE_BYTES if tls else 0)) / TLS_RECORD_OVERHEAD))
            msgs = [b"".join(msgs)[:keep]]
        bound += 2 * directions * n * _wire(msgs, tls) / smallest / SLOW_WRITES_PER_S
    if rates:
        bound += directions * _wire(msgs, tls) / (min(rates) * BANDWIDTH_SHARE)
    if any(isinstance(t, Latency | SlowClose) for t in toxics):
        bound += directions * DELAY_SLACK
    return n, msgs, bound


def phase_toxics(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """Toxics added, updated and removed on a proxy while traffic flows through it."""
    proxy, tls = rng.choice([(t.proxy, None), (t.tls_proxy, t.tls)])
    chosen = rng.sample(SOAK_TOXICS, rng.randint(1, 3))
    keeps_bytes = all(keep for *_, keep in chosen)
    direction = rng.choice(["upstream", "downstream", "both"])
    n = rng.randint(5, 30)
    msgs = messages(rng, rng.random() < 0.1)
    seed = rng.getrandbits(32)
    updates = [update(rng) for _, _, update, _ in chosen]
    toxics = [make(rng) for _, make, _, _ in chosen]
    n, msgs, bound = toxic_bound(toxics, updates, 2 if direction == "both" else 1, n, msgs,
                                 tls=tls is not None)

    def traffic() -> None:
        run_client(tally, phase, f"toxics {[c[0] for c in chosen]} {direction}", proxy.address,
                   n=n, msgs=msgs, must_echo=keeps_bytes, tls=tls, seed=seed, bound=bound)

    names = []
    try:
        for (kind, *_), toxic in zip(chosen, toxics, strict=True):
            names.append(proxy.add(toxic, direction=direction))
            tally.faults[f"toxic:{kind}"] += 1
        with background(traffic, bound):
            for name, params in zip(names, updates, strict=True):
                proxy.update(name, **params)
                tally.faults["toxic-update"] += 1
    finally:
        for name in names:
            proxy.remove(name)
            tally.faults["toxic-remove"] += 1
    return (f"{toxics!r} {direction} on {proxy.name}, {n} x {sum(map(len, msgs)):,} B, "
            f"bound {bound:.0f}s")


def phase_live_toxic_churn(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """Byte-preserving toxics added and removed many times during one long exchange."""
    keepers = [c for c in SOAK_TOXICS if c[3]]
    msgs = [rng.randbytes(1 << 20)]
    seed = rng.getrandbits(32)
    churn = [(rng.choice(keepers), rng.choice(["upstream", "downstream"])) for _ in range(6)]
    # Drawn in the order the additions use them (the schedule is what it was when they were
    # drawn one by one), before the traffic: the bound depends on them.
    toxics = [make(rng) for (_, make, _, _), _ in churn]
    n = 2
    # A toxic removed under traffic hands on at once what its direction held (PIPE_HOLD at
    # most per connection); for a Slicer that is PIPE_HOLD / average_size writes, counted
    # twice as in toxic_bound().
    bound = BOUND + DELAY_SLACK * len(churn) + sum(
        2 * n * min(len(msgs[0]), PIPE_HOLD) / toxic.average_size / SLOW_WRITES_PER_S
        for toxic in toxics if isinstance(toxic, Slicer)
    )
    done = threading.Event()

    def traffic() -> None:
        try:
            run_client(tally, phase, "live toxic churn", t.proxy.address, n=n, msgs=msgs,
                       must_echo=True, seed=seed, bound=bound)
        finally:
            done.set()

    with background(traffic, bound):
        for ((kind, _, _, _), direction), toxic in zip(churn, toxics, strict=True):
            if done.is_set():
                break
            name = t.proxy.add(toxic, direction=direction)
            tally.faults[f"toxic:{kind}"] += 1
            done.wait(0.05)  # a bounded pause so traffic flows under the toxic
            t.proxy.remove(name)
            tally.faults["toxic-remove"] += 1
    return f"{len(churn)} toxics on and off during a 1 MiB exchange, bound {bound:.0f}s"


def phase_peaks(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """Warm-up only: the largest thing the schedule can ask of each server, once.

    Why: memory a peak needed goes back to the allocators, not to the kernel, and the next peak
    reuses it.  In a 10-minute run (seed 2553898067) each of the first ``Burst(200)`` runs
    against the TLS server raised the server process's RSS by 0.7-1.5 MiB, and a later one by
    about as much for a phase only; met first after warm-up, such a peak reads as growth.  So
    warm-up meets every peak first: 200 connections at once and a never-reading client of
    4 MiB against each target, and one connection of ``SLICED_PEAK`` bytes through
    ``Slicer(average_size=1)`` (one write a byte) on the faulty server."""
    targets = [("echo", t.echo, None), ("tls-echo", t.tls_echo, t.tls),
               ("proxy", t.proxy.address, None), ("tls-proxy", t.tls_proxy.address, t.tls)]
    for what, address, tls in targets:
        for fault in (Burst(connections=200), NeverRead(size=4 << 20, stall=0.2)):
            tally.faults[f"client:{fault.name}"] += 1
            run_client(tally, phase, f"peak {fault!r} -> {what}", address, n=1,
                       msgs=messages(rng, False), must_echo=True, tls=tls, faults=[fault],
                       seed=rng.getrandbits(32))
    fill = Slicer(average_size=1)
    tally.faults[f"server:{fill.name}"] += 1
    t.servers.call("set_faults", _on(fill))
    try:
        run_client(tally, phase, f"peak {fill!r} -> faulty", t.faulty, n=1,
                   msgs=[rng.randbytes(SLICED_PEAK)], must_echo=True,
                   seed=rng.getrandbits(32))
    finally:
        t.servers.call("set_faults", ServerFaults())
    return "Burst(200) and NeverRead(4 MiB) against each server, one byte a write when faulty"


PHASES: list[tuple[str, Callable[[Targets, Tally, int, Rng], str], int]] = [
    ("clean", phase_clean, 3),
    ("client_fault", phase_client_fault, 4),
    ("server_fault", phase_server_fault, 3),
    ("toxics", phase_toxics, 4),
    ("toxic_churn", phase_live_toxic_churn, 1),
]


#: The first phases of every run, in order: the peaks, then each kind of phase twice.
WARMUP = [("peaks", phase_peaks, 0), *PHASES, *PHASES]


def settle(t: Targets, tally: Tally, phase: int, what: str) -> None:
    """Every server and proxy back to zero open connections, and no loop error."""
    for problem in t.servers.call("settle", BOUND, timeout=CHILD_SETTLE):
        tally.violate(phase, f"{problem} (after {what})")


def idle_window(t: Targets, tally: Tally, phase: int) -> None:
    """The server process's CPU share while nothing is sent to it."""
    pause = threading.Event()
    cpu0, wall0 = t.servers.cpu(), time.monotonic()
    pause.wait(IDLE_WINDOW)
    share = (t.servers.cpu() - cpu0) / (time.monotonic() - wall0)
    tally.idle_windows += 1
    tally.idle_cpu_max = max(tally.idle_cpu_max, share)
    if share > IDLE_CPU_LIMIT:
        tally.violate(phase, f"server process idle CPU {share:.1%} over {IDLE_WINDOW}s (limit "
                      f"{IDLE_CPU_LIMIT:.0%})")


def soak(
    seed: int, duration: float, out: Callable[[str], None] = print, *, verbose: bool = False
) -> Tally:
    tally = Tally(seed, duration)
    rng = random.Random(seed)
    fds0, threads0 = open_fds(), threading.active_count()
    started = time.monotonic()
    warmup_end = started + max(min(duration * 0.25, 60.0), min(10.0, duration / 2))
    deadline = started + duration
    weights = [w for *_, w in PHASES]
    servers = ServerProcess([rng.getrandbits(32) for _ in range(3)])
    child: dict[str, Any] | None = None
    phase = 0
    try:
        targets = Targets(servers, RemoteProxy(servers, "proxy"), RemoteProxy(servers, "tls_proxy"))
        while time.monotonic() < deadline:
            phase += 1
            # Warm-up meets the peaks (phase_peaks), then runs every kind of phase twice: the
            # first TLS-through-proxy run or the first 1 MiB exchange allocates caches that
            # stay, and growth measured before all of them ran would be warm-up, not a leak.
            if phase <= len(WARMUP):
                name, fn, _ = WARMUP[phase - 1]
            else:
                name, fn, _ = rng.choices(PHASES, weights)[0]
            tally.phases[name] += 1
            detail = ""
            try:
                detail = fn(targets, tally, phase, random.Random(rng.getrandbits(64)))
            except ServerProcessError:
                raise
            except Exception as exc:  # noqa: BLE001 - the soak reports and goes on
                tally.violate(phase, f"{name} raised {type(exc).__name__}: {exc}")
            settle(targets, tally, phase, f"{name}: {detail}")
            if phase % 8 == 0:
                idle_window(targets, tally, phase)
            current = servers.rss()
            if verbose:
                out(f"phase {phase:4d} rss {current / 2**20:6.1f} MiB conns "
                    f"{tally.connections:6d} {name}: {detail}")
            warm = time.monotonic() >= warmup_end and phase >= len(WARMUP)
            tally.sample_rss(phase, name, current, warm=warm)
            _first_census(servers, tally, phase, warm=warm)
        idle_window(targets, tally, phase)
        _last_census(servers, tally)
        child = servers.stop()
    except ServerProcessError as exc:
        tally.violate(phase, str(exc))  # the run cannot go on without its servers
    finally:
        servers.kill()
    # Everything stopped: descriptors and threads back to where they were, here and there.
    fds1, threads1 = open_fds(), threading.active_count()
    if fds1 > fds0:
        tally.violate(phase, f"client process descriptors: {fds0} before, {fds1} after stop")
    if threads1 > threads0:
        names = [th.name for th in threading.enumerate()]
        tally.violate(phase, f"client process threads: {threads0} before, {threads1} after "
                      f"stop: {names}")
    rows = [("client process fds", f"{fds0} -> {fds1}"),
            ("client process threads", f"{threads0} -> {threads1}"),
            *check_child(tally, phase, child)]
    summary(tally, phase, time.monotonic() - started, rows, out)
    return tally


def check_child(tally: Tally, phase: int, child: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The server process's descriptors and threads after its servers stopped."""
    if child is None:
        return [("server process", "did not stop cleanly (see the violations)")]
    (fds0, fds1), (threads0, threads1) = child["fds"], child["threads"]
    if fds1 > fds0:
        tally.violate(phase, f"server process descriptors: {fds0} before, {fds1} after stop")
    if threads1 > threads0:
        tally.violate(phase, f"server process threads: {threads0} before, {threads1} after "
                      f"stop: {child['thread_names']}")
    return [("server process fds", f"{fds0} -> {fds1}"),
            ("server process threads", f"{threads0} -> {threads1}")]


def _first_census(servers: ServerProcess, tally: Tally, phase: int, *, warm: bool) -> None:
    """After a phase: note the heap counts; take the census at the first warm phase."""
    if tally.sample_heap(phase, servers.blocks, servers.objects, warm=warm):
        tally.census_warm = servers.call("census")


def _last_census(servers: ServerProcess, tally: Tally) -> None:
    """At the end: what grew since the first census (none taken: the run was too short)."""
    if tally.census_warm is not None:
        tally.census_grown = _grown(tally.census_warm, servers.call("census"))


def _grown(before: dict[str, int], after: dict[str, int], top: int = 6) -> list[tuple[str, int]]:
    growth = [(name, n - before.get(name, 0)) for name, n in after.items()]
    return sorted((g for g in growth if g[1] > 0), key=lambda g: -g[1])[:top]


def _heap_row(tally: Tally) -> str:
    if tally.heap_warm is None or tally.heap_last is None:
        return "n/a (run shorter than warm-up)"
    (p0, b0, o0), (p1, b1, o1) = tally.heap_warm, tally.heap_last
    return (f"blocks {b0:,} -> {b1:,} ({b1 - b0:+,}), objects {o0:,} -> {o1:,} ({o1 - o0:+,}), "
            f"phases {p0} -> {p1}")


def summary(tally: Tally, phase: int, elapsed: float, extra: list[tuple[str, str]],
            out: Callable[[str], None]) -> None:
    growth = (
        f"{tally.rss_growth / 2**20:+.1f} MiB (baseline {tally.rss_baseline / 2**20:.1f} MiB, "
        f"last {tally.rss_samples[-1] / 2**20:.1f} MiB)"
        if tally.rss_baseline is not None
        else "n/a (run shorter than warm-up)"
    )
    rows = [
        ("seed", str(tally.seed)),
        ("duration", f"{elapsed:.0f} s ({phase} phases)"),
        ("phases", ", ".join(f"{k} {v}" for k, v in sorted(tally.phases.items()))),
        ("connections", f"{tally.connections:,}"),
        ("bytes echoed intact", f"{tally.bytes_echoed:,}"),
        ("faults applied", f"{sum(tally.faults.values()):,} ("
         + ", ".join(f"{k} {v}" for k, v in sorted(tally.faults.items())) + ")"),
        ("server RSS growth after warm-up", f"{growth} (limit {RSS_LIMIT / 2**20:.0f} MiB)"),
        ("server Python heap after warm-up", _heap_row(tally)),
        ("server objects that grew most",
         ", ".join(f"{name} {n:+,}" for name, n in tally.census_grown) or "none"),
        ("server idle CPU (max window)",
         f"{tally.idle_cpu_max:.1%} over {tally.idle_windows} windows"),
        ("longest client bound", f"{tally.longest_bound:.0f} s"),
        *extra,
        ("violations", str(len(tally.violations))),
    ]
    width = max(len(k) for k, _ in rows)
    out("")
    for key, value in rows:
        out(f"| {key:<{width}} | {value}")
    if tally.violations:
        out(f"\nreplay: python benchmarks/soak.py --seed {tally.seed} --duration "
            f"{tally.duration:g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds to run (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="schedule seed (default: random)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per phase")
    # The server process is this script too, started with these two.
    parser.add_argument("--serve-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fd is not None:
        if args.parent is None:
            parser.error("--serve-fd needs --parent")
        return serve(args.serve_fd, args.parent)
    if not 0 < args.duration < 7 * 24 * 3600:
        parser.error(f"--duration must be a positive number of seconds, got {args.duration!r}")
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    print(f"soak: seed {seed}, {args.duration:g} s; replay: python benchmarks/soak.py "
          f"--seed {seed} --duration {args.duration:g}", flush=True)
    tally = soak(seed, args.duration, verbose=args.verbose)
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
