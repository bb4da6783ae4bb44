"""The suite's measurements of the server itself: which processes serve the port, their
memory and CPU, sampled over a row, and the wait for a quiet server between rows.

A verdict about memory or CPU is a reading of the server, never an estimate from what the
suite sent: a server that reads and discards, half-closes, stops reading or resets is bounded
whatever the bytes say, and one that piles up replies shows it in its memory.

The server is found from its listening port (Linux ``/proc``): every process holding the
listening socket (a pre-fork master and its workers all do), the topmost of them, and all of
its descendants (workers, per-connection children such as socat's and ncat's).  Memory is the
sum of ``Pss`` (``/proc/<pid>/smaps_rollup``; forked children share pages, and PSS counts a
shared page once) or, where that cannot be read, ``VmRSS``.  CPU is the sum of user and system
time over the tree.  Elsewhere (a remote host, a Unix socket without ``pid=``, another
user's process) the tree is empty and the rows that need it say they cannot see the server.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.suite.model import Sample
from pytest_multiconn.suite.probes import (
    cpu_seconds,
    listdir,
    listener_pids,
    rss_bytes,
    scheduled_seconds,
)

#: How often a row samples the server tree.
SAMPLE_EVERY = 0.05
#: Samples kept per row (a row lasts at most a few seconds; this bounds a long one).
MAX_SAMPLES = 2_000


def _ppids() -> dict[int, int]:
    """pid -> parent pid of every process we can see."""
    parents: dict[int, int] = {}
    for name in listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        with contextlib.suppress(IndexError, ValueError):
            parents[int(name)] = int(fields[1])
    return parents


def descendants(roots: Iterable[int]) -> list[int]:
    """``roots`` and every process below them, roots first."""
    parents = _ppids()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    seen: list[int] = []
    todo = [r for r in roots if r in parents]
    for _ in range(100_000):
        if not todo:
            break
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(sorted(children.get(pid, ())))
    return seen


@dataclass(frozen=True)
class ServerTree:
    """The processes that serve one port: ``root`` (the topmost process holding the
    listener, or the pid given) and, at each reading, it and its descendants.

    ``own`` is true when the server runs in this very process (a fixture's loop thread):
    its memory and CPU then include the suite's own clients, which the rows allow for.
    """

    root: int | None
    how: str

    @property
    def visible(self) -> bool:
        return self.root is not None

    @property
    def own(self) -> bool:
        return self.root == os.getpid()

    def pids(self) -> list[int]:
        """The tree's pids now (workers come and go)."""
        if self.root is None:
            return []
        if self.own:
            return [self.root]  # our children are the suite's, not the server's
        pids = descendants([self.root])
        if os.getpid() in pids:
            # The server is an ancestor of the suite (a pytest run started by the server's
            # process): the suite and its children are not the server.
            ours = set(descendants([os.getpid()]))
            pids = [p for p in pids if p not in ours]
        return pids

    def memory(self, pids: Sequence[int] | None = None) -> int | None:
        """Bytes of memory of the tree (PSS where readable, else RSS), or None."""
        pids = self.pids() if pids is None else pids
        values = [process_memory(p) for p in pids]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    def cpu(self, pids: Sequence[int] | None = None) -> float | None:
        """CPU seconds (user + system) of the tree so far, or None."""
        pids = self.pids() if pids is None else pids
        values = [process_cpu(p) for p in pids]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    def describe(self) -> str:
        if self.root is None:
            return f"the server's processes cannot be seen ({self.how})"
        pids = self.pids()
        shown = ", ".join(map(str, pids[:8])) + (" ..." if len(pids) > 8 else "")  # noqa: PLR2004
        return f"pids {shown} ({self.how})"


def find_tree(address: SocketAddress, pid: int | None = None) -> ServerTree:
    """The :class:`ServerTree` serving ``address``: from ``pid`` when given, else from the
    processes holding the listening socket (Linux)."""
    if pid is not None:
        return ServerTree(pid, "given with pid=")
    if isinstance(address, str):
        return ServerTree(None, "a Unix socket: give pid= to measure it")
    holders = listener_pids(address)
    if not holders:
        return ServerTree(None, "no process of ours holds the listener: remote, or another "
                          "user's; give pid= to measure it")
    if os.getpid() in holders:
        return ServerTree(os.getpid(), "this process holds the listener")
    parents = _ppids()
    tops = [p for p in holders if parents.get(p) not in holders]
    root = min(tops or holders)
    how = "the listener's owner and its children"
    if len(holders) > 1:
        how = f"the listener's owner and its children ({len(holders)} hold the listener)"
    return ServerTree(root, how)


def process_memory(pid: int) -> int | None:
    """PSS of ``pid`` in bytes (``smaps_rollup``), else its RSS; None when unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return rss_bytes(pid)


def process_cpu(pid: int) -> float | None:
    """CPU seconds ``pid``'s threads have run: ``schedstat`` (nanoseconds, summed over the
    living threads), else user + system time (:func:`~pytest_multiconn.suite.probes.cpu_seconds`:
    ``/proc/<pid>/stat`` ticks, or this process's own clock)."""
    if pid != os.getpid():
        times = scheduled_seconds(pid)
        if times is not None:
            return times[0]
    return cpu_seconds(pid)


class Sampler:
    """Samples a :class:`ServerTree`'s memory and CPU every :data:`SAMPLE_EVERY` in a thread,
    from ``with`` to its end; ``samples`` are the readings, ``peak_growth()`` the most the
    memory rose above the first reading."""

    def __init__(self, tree: ServerTree) -> None:
        self.tree = tree
        self.samples: list[Sample] = []
        self.pids_seen: list[int] = []
        #: The tree's pids at the last reading (None before the first).
        self.latest_pids: list[int] | None = None
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_cpu: tuple[float, float] | None = None
        self._thread = threading.Thread(target=self._run, name="multiconn-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._started = time.monotonic()
        self.sample()
        if self.tree.visible:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.sample()

    def _run(self) -> None:
        for _ in range(MAX_SAMPLES):
            if self._stop.wait(SAMPLE_EVERY):
                return
            if not self._paused.is_set():
                self.sample()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No sampling meanwhile: a window in which this process must be idle (the idle
        row measuring a server in this very process) is not disturbed by the sampler."""
        self._paused.set()
        try:
            yield
        finally:
            self._paused.clear()

    def sample(self) -> Sample:
        """Read the tree now (also called by a row when it needs a fresh reading)."""
        pids = self.tree.pids()
        self.latest_pids = pids
        memory = self.tree.memory(pids)
        cpu_total = self.tree.cpu(pids)
        now = time.monotonic()
        share = None
        with self._lock:
            if cpu_total is not None and self._last_cpu is not None and now > self._last_cpu[0]:
                share = max(cpu_total - self._last_cpu[1], 0.0) / (now - self._last_cpu[0])
            if cpu_total is not None:
                self._last_cpu = (now, cpu_total)
            sample = Sample(round(now - self._started, 4), memory,
                            None if share is None else round(share, 4))
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(sample)
            for p in pids:
                if p not in self.pids_seen:
                    self.pids_seen.append(p)
        return sample

    @property
    def baseline(self) -> int | None:
        return next((s.memory for s in self.samples if s.memory is not None), None)

    def growth(self) -> int | None:
        """Memory now (the last sample) above the first reading."""
        with self._lock:
            last = next((s.memory for s in reversed(self.samples) if s.memory is not None),
                        None)
        base = self.baseline
        return None if base is None or last is None else last - base

    def peak_growth(self) -> int | None:
        base = self.baseline
        with self._lock:
            known = [s.memory for s in self.samples if s.memory is not None]
        return None if base is None or not known else max(known) - base

    def growth_since(self, seconds: float) -> int | None:
        """How much the memory rose over the last ``seconds``."""
        with self._lock:
            known = [(s.t, s.memory) for s in self.samples if s.memory is not None]
        if len(known) < 2:  # noqa: PLR2004
            return None
        end_t, end = known[-1]
        start = next((m for t, m in known if t >= end_t - seconds), known[0][1])
        return end - start


#: A server counts as settled when its tree used less than this share of a CPU over a
#: window of SETTLE_WINDOW seconds.
SETTLE_SHARE = 0.05
SETTLE_WINDOW = 0.05
#: The longest the suite waits for a server to settle before a row (then it says so).
SETTLE_LIMIT = 3.0


def settle(tree: ServerTree, limit: float = SETTLE_LIMIT) -> tuple[float, str | None]:
    """Wait, bounded by ``limit``, until the server tree is idle: (seconds waited, None) or
    (seconds waited, why it did not settle).  A server in this process is not waited for
    (our own threads are part of the reading)."""
    start = time.monotonic()
    if not tree.visible or tree.own:
        return 0.0, None
    last = tree.cpu()
    shares: list[float] = []
    deadline = start + limit
    for _ in range(10_000):
        if last is None:
            return time.monotonic() - start, None
        before = time.monotonic()
        threading.Event().wait(SETTLE_WINDOW)  # a measurement window, not synchronisation
        now_cpu = tree.cpu()
        wall = time.monotonic() - before
        if now_cpu is None:
            return time.monotonic() - start, None
        share = max(now_cpu - last, 0.0) / wall
        shares.append(share)
        last = now_cpu
        if share < SETTLE_SHARE:
            return time.monotonic() - start, None
        if time.monotonic() >= deadline:
            break
    waited = time.monotonic() - start
    return waited, (f"the server never settled: it used {min(shares, default=0):.0%} of a CPU "
                    f"or more for {waited:.1f} s after the previous row")
