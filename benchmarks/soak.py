"""The soak: servers, a TLS server and fault proxies under a seeded random schedule of faults.

For a bounded time (``--duration``, default 10 minutes) it runs, in this process: a plain
:class:`EchoServer`, a TLS ``EchoServer``, a :class:`FaultyEchoServer` and a
:class:`FaultProxy` in front of each of the first two.  A seeded random schedule of phases
throws at them every client fault, every server fault and every toxic (added, updated and
removed while traffic flows), with thousands of short connections and some long ones, and
checks invariants as it goes:

* every byte of every exchange that must survive its faults is intact (the client compares);
* no connection is stuck past its bound: every client run ends within its timeout, and every
  server and proxy is back to zero open connections within ``BOUND`` seconds of each phase;
* no loop thread recorded an error (``check()``);
* RSS (``/proc/self/statm``) grows less than 5 MiB after warm-up;
* CPU is near 0 in idle windows between phases (``resource.getrusage`` over the window);
* descriptors and threads are back to their baseline once everything stopped.

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
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pytest_multiconn import (
    EchoServer,
    FaultProxy,
    FaultyEchoServer,
    MultiConnClient,
    TLSConfig,
)
from pytest_multiconn.faults import (
    AcceptThenClose,
    Burst,
    ChunkedEcho,
    ClientFault,
    ClientReset,
    CloseAfter,
    ConnectClose,
    DelayEcho,
    Garbage,
    HalfClose,
    NeverClose,
    NeverRead,
    PartialSend,
    ResetAfter,
    ServerFault,
    Silent,
    SlowReader,
    Stall,
    StopAccepting,
)
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
PAGE = os.sysconf("SC_PAGE_SIZE")

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

# Server faults, and whether a plain exchange still gets every byte back.
SOAK_SERVER_FAULTS: list[tuple[str, Callable[[Rng], ServerFault], bool]] = [
    ("delay_echo", lambda r: DelayEcho(seconds=r.choice([0.001, 0.02]), jitter=0.005), True),
    ("chunked_echo", lambda r: ChunkedEcho(max_chunk=r.choice([1, 3, 100, 1400])), True),
    ("stall", lambda r: Stall(read=r.random() < 0.5), False),
    ("close_after", lambda r: CloseAfter(n_bytes=r.choice([0, 10, 1000])), False),
    ("reset_after", lambda r: ResetAfter(n_bytes=r.choice([0, 10, 1000])), False),
    ("accept_then_close", lambda r: AcceptThenClose(reset=r.random() < 0.5), False),
    ("stop_accepting", lambda r: StopAccepting(), False),
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
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: measure as is
        return None


LIBC = _libc()
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def pin_allocator() -> None:
    """Fix glibc's mmap threshold at 128 KiB and use one arena.

    Why: the clients of this soak live in the measured process and send messages of up to
    1 MiB.  glibc raises its mmap threshold each time such a block is freed, after which
    large blocks come from the heap and stay in RSS as free space; growth would then measure
    the allocator's caching instead of what the servers keep.
    """
    if LIBC is not None:
        LIBC.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        # One malloc arena for every thread: each new thread (a loop, the traffic thread)
        # may otherwise get an arena of its own, and the free space scattered over several
        # arenas shows as growth that malloc_trim cannot give back.
        LIBC.mallopt(M_ARENA_MAX, 1)


def rss() -> int:
    """Resident bytes (``/proc/self/statm``), after handing free heap pages back."""
    gc.collect()
    if LIBC is not None:
        LIBC.malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    rss_baseline: float | None = None
    rss_reported: float = 0.0
    rss_growth: float = 0.0
    idle_cpu_max: float = 0.0
    idle_windows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

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
            self.violate(phase, f"RSS {(recent - self.rss_baseline) / 2**20:+.1f} MiB since "
                         f"warm-up (median of the last {RSS_WINDOW} phases), after {after} "
                         f"(limit {RSS_LIMIT / 2**20:.0f} MiB; {self.connections:,} "
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
    echo: EchoServer
    tls_echo: EchoServer
    faulty: FaultyEchoServer
    proxy: FaultProxy
    tls_proxy: FaultProxy

    def all(self) -> list[Any]:
        return [self.echo, self.tls_echo, self.faulty, self.proxy, self.tls_proxy]


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
) -> None:
    """One client run; checks its bound and, when ``must_echo``, every byte."""
    started = time.monotonic()
    try:
        client = MultiConnClient(
            address, n, msgs, timeout=BOUND, tls=tls, faults=faults or (), seed=seed
        )
        results = client.run()
    except Exception as exc:  # noqa: BLE001 - a violation to report, not a crash of the soak
        tally.violate(phase, f"{what}: client raised {type(exc).__name__}: {exc}")
        return
    elapsed = time.monotonic() - started
    with tally.lock:
        tally.connections += len(results)
        tally.bytes_echoed += sum(r.received for r in results if r.matched)
    if elapsed > BOUND + 5:
        tally.violate(phase, f"{what}: a client run took {elapsed:.1f}s (bound {BOUND}s)")
    if must_echo and not results.ok:
        bad = results.failed[0]
        tally.violate(phase, f"{what}: {len(results.failed)}/{len(results)} failed: {bad}")


@contextlib.contextmanager
def background(fn: Callable[[], None]) -> Iterator[None]:
    thread = threading.Thread(target=fn, name="soak-traffic", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(BOUND * 3)
        if thread.is_alive():
            raise RuntimeError("soak traffic thread did not end: the soak itself is stuck")


def phase_clean(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """Short and long connections to every server, direct and through the proxies."""
    plan = [
        ("echo", t.echo.address, None),
        ("tls-echo", t.tls_echo.address, t.tls_echo.client_tls),
        ("proxy", t.proxy.address, None),
        ("tls-proxy", t.tls_proxy.address, t.tls_echo.client_tls),
        ("faulty(no faults)", t.faulty.address, None),
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
        ("echo", t.echo.address, None),
        ("tls-echo", t.tls_echo.address, t.tls_echo.client_tls),
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
    t.faulty.set_faults([fault])
    try:
        n = 3 if name == "stop_accepting" else rng.randint(5, 40)
        timeout_run = BOUND if keeps_bytes else 3.0
        started = time.monotonic()
        client = MultiConnClient(t.faulty.address, n, messages(rng, False), timeout=timeout_run,
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
        t.faulty.set_faults([])
    return repr(fault)


def phase_toxics(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """Toxics added, updated and removed on a proxy while traffic flows through it."""
    proxy, tls = rng.choice([(t.proxy, None), (t.tls_proxy, t.tls_echo.client_tls)])
    chosen = rng.sample(SOAK_TOXICS, rng.randint(1, 3))
    keeps_bytes = all(keep for *_, keep in chosen)
    direction = rng.choice(["upstream", "downstream", "both"])
    n = rng.randint(5, 30)
    msgs = messages(rng, rng.random() < 0.1)
    seed = rng.getrandbits(32)
    updates = [update(rng) for _, _, update, _ in chosen]
    toxics = [make(rng) for _, make, _, _ in chosen]

    def traffic() -> None:
        run_client(tally, phase, f"toxics {[c[0] for c in chosen]} {direction}", proxy.address,
                   n=n, msgs=msgs, must_echo=keeps_bytes, tls=tls, seed=seed)

    names = []
    try:
        for (kind, *_), toxic in zip(chosen, toxics, strict=True):
            names.append(proxy.add(toxic, direction=direction))
            tally.faults[f"toxic:{kind}"] += 1
        with background(traffic):
            for name, params in zip(names, updates, strict=True):
                proxy.update(name, **params)
                tally.faults["toxic-update"] += 1
    finally:
        for name in names:
            proxy.remove(name)
            tally.faults["toxic-remove"] += 1
    return f"{toxics!r} {direction} on {proxy.name}"


def phase_live_toxic_churn(t: Targets, tally: Tally, phase: int, rng: Rng) -> str:
    """Byte-preserving toxics added and removed many times during one long exchange."""
    keepers = [c for c in SOAK_TOXICS if c[3]]
    msgs = [rng.randbytes(1 << 20)]
    seed = rng.getrandbits(32)
    churn = [(rng.choice(keepers), rng.choice(["upstream", "downstream"])) for _ in range(6)]
    done = threading.Event()

    def traffic() -> None:
        try:
            run_client(tally, phase, "live toxic churn", t.proxy.address, n=2, msgs=msgs,
                       must_echo=True, seed=seed)
        finally:
            done.set()

    with background(traffic):
        for (kind, make, _, _), direction in churn:
            if done.is_set():
                break
            name = t.proxy.add(make(rng), direction=direction)
            tally.faults[f"toxic:{kind}"] += 1
            done.wait(0.05)  # a bounded pause so traffic flows under the toxic
            t.proxy.remove(name)
            tally.faults["toxic-remove"] += 1
    return f"{len(churn)} toxics on and off during a 1 MiB exchange"


PHASES: list[tuple[str, Callable[[Targets, Tally, int, Rng], str], int]] = [
    ("clean", phase_clean, 3),
    ("client_fault", phase_client_fault, 4),
    ("server_fault", phase_server_fault, 3),
    ("toxics", phase_toxics, 4),
    ("toxic_churn", phase_live_toxic_churn, 1),
]


def settle(t: Targets, tally: Tally, phase: int, what: str) -> None:
    """Every server and proxy back to zero open connections, and no loop error."""
    for server in t.all():
        try:
            server.wait_for_idle(BOUND)
        except Exception as exc:  # noqa: BLE001 - reported as a violation
            tally.violate(phase, f"stuck past {BOUND}s after {what}: {exc}".splitlines()[0])
        try:
            server.check()
        except Exception as exc:  # noqa: BLE001 - reported as a violation
            tally.violate(phase, f"loop error in {server.name}: {exc}".splitlines()[0])


def idle_window(tally: Tally, phase: int) -> None:
    pause = threading.Event()
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    pause.wait(IDLE_WINDOW)
    share = (cpu_seconds() - cpu0) / (time.monotonic() - wall0)
    tally.idle_windows += 1
    tally.idle_cpu_max = max(tally.idle_cpu_max, share)
    if share > IDLE_CPU_LIMIT:
        tally.violate(phase, f"idle CPU {share:.1%} over {IDLE_WINDOW}s (limit "
                      f"{IDLE_CPU_LIMIT:.0%})")


def soak(
    seed: int, duration: float, out: Callable[[str], None] = print, *, verbose: bool = False
) -> Tally:
    pin_allocator()
    tally = Tally(seed, duration)
    rng = random.Random(seed)
    fds0, threads0 = open_fds(), threading.active_count()
    tls = TLSConfig()
    started = time.monotonic()
    warmup_end = started + max(min(duration * 0.25, 60.0), min(10.0, duration / 2))
    deadline = started + duration
    weights = [w for *_, w in PHASES]
    with contextlib.ExitStack() as stack:
        echo = stack.enter_context(EchoServer())
        tls_echo = stack.enter_context(EchoServer(tls=tls))
        faulty = stack.enter_context(FaultyEchoServer(seed=rng.getrandbits(32)))
        proxy = stack.enter_context(FaultProxy(echo.address, seed=rng.getrandbits(32)))
        tls_proxy = stack.enter_context(FaultProxy(tls_echo.address, seed=rng.getrandbits(32)))
        targets = Targets(echo, tls_echo, faulty, proxy, tls_proxy)
        phase = 0
        while time.monotonic() < deadline:
            phase += 1
            # Warm-up runs every kind of phase twice first: the first TLS-through-proxy run or
            # the first 1 MiB exchange allocates caches that stay, and growth measured before
            # all of them ran would be warm-up, not a leak.
            if phase <= 2 * len(PHASES):
                name, fn, _ = PHASES[(phase - 1) % len(PHASES)]
            else:
                name, fn, _ = rng.choices(PHASES, weights)[0]
            tally.phases[name] += 1
            detail = ""
            try:
                detail = fn(targets, tally, phase, random.Random(rng.getrandbits(64)))
            except Exception as exc:  # noqa: BLE001 - the soak reports and goes on
                tally.violate(phase, f"{name} raised {type(exc).__name__}: {exc}")
            settle(targets, tally, phase, f"{name}: {detail}")
            if phase % 8 == 0:
                idle_window(tally, phase)
            current = rss()
            if verbose:
                out(f"phase {phase:4d} rss {current / 2**20:6.1f} MiB conns "
                    f"{tally.connections:6d} {name}: {detail}")
            warm = time.monotonic() >= warmup_end and phase >= 2 * len(PHASES)
            tally.sample_rss(phase, name, current, warm=warm)
        idle_window(tally, phase)
    # Everything stopped: descriptors and threads back to where they were.
    threads_left = [th.name for th in threading.enumerate()][threads0:]
    fds1, threads1 = open_fds(), threading.active_count()
    if fds1 > fds0:
        tally.violate(phase, f"descriptors: {fds0} before, {fds1} after stop")
    if threads1 > threads0:
        tally.violate(phase, f"threads: {threads0} before, {threads1} after stop: {threads_left}")
    elapsed = time.monotonic() - started
    growth = (
        f"{tally.rss_growth / 2**20:+.1f} MiB (baseline {tally.rss_baseline / 2**20:.1f} MiB, "
        f"last {tally.rss_samples[-1] / 2**20:.1f} MiB)"
        if tally.rss_baseline is not None
        else "n/a (run shorter than warm-up)"
    )
    rows = [
        ("seed", str(seed)),
        ("duration", f"{elapsed:.0f} s ({phase} phases)"),
        ("phases", ", ".join(f"{k} {v}" for k, v in sorted(tally.phases.items()))),
        ("connections", f"{tally.connections:,}"),
        ("bytes echoed intact", f"{tally.bytes_echoed:,}"),
        ("faults applied", f"{sum(tally.faults.values()):,} ("
         + ", ".join(f"{k} {v}" for k, v in sorted(tally.faults.items())) + ")"),
        ("RSS growth after warm-up", f"{growth} (limit {RSS_LIMIT / 2**20:.0f} MiB)"),
        ("idle CPU (max window)", f"{tally.idle_cpu_max:.1%} over {tally.idle_windows} windows"),
        ("descriptors", f"{fds0} -> {fds1}"),
        ("threads", f"{threads0} -> {threads1}"),
        ("violations", str(len(tally.violations))),
    ]
    width = max(len(k) for k, _ in rows)
    out("")
    for key, value in rows:
        out(f"| {key:<{width}} | {value}")
    if tally.violations:
        out(f"\nreplay: python benchmarks/soak.py --seed {seed} --duration {duration:g}")
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds to run (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="schedule seed (default: random)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per phase")
    args = parser.parse_args(argv)
    if not 0 < args.duration < 7 * 24 * 3600:
        parser.error(f"--duration must be a positive number of seconds, got {args.duration!r}")
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    print(f"soak: seed {seed}, {args.duration:g} s; replay: python benchmarks/soak.py "
          f"--seed {seed} --duration {args.duration:g}", flush=True)
    tally = soak(seed, args.duration, verbose=args.verbose)
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
