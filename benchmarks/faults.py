"""Fault measurements for the README: what our EchoServer shows under client faults.

    python benchmarks/faults.py [--size-mib 1024] [--idle 1000] [--reps 5]

1. A client that tries to send ``--size-mib`` MiB and never reads: the bytes the server holds
   for it (exact, from /proc: see pytest_multiconn.suite.probes) against its high-water mark, and
   other connections' echo latency during it, as a ratio to an unloaded run (median of reps).
2. ``--idle`` clients that never close: idle_timeout closes them all; then the server's stop()
   (teardown) time.
3. 1-byte partial sends with random pauses over many seeds: byte-exact every time.

Loopback only; every run is bounded.  Prints ratios, never absolute claims alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.faults.client import Garbage, NeverClose, NeverRead, PartialSend
from pytest_multiconn.suite.probes import LatencyProbe, server_held_bytes


def probe_latency(address: object, seconds: float) -> LatencyProbe:
    with LatencyProbe(address, pace=0.001) as probe:
        import threading

        threading.Event().wait(seconds)  # the probe runs meanwhile; this thread just waits
    if probe.error:
        raise SystemExit(f"probe failed: {probe.error}")
    return probe


def never_read(size: int, reps: int) -> None:
    held, ratios, sent = [], [], []
    for rep in range(reps):
        with EchoServer() as server:
            base = probe_latency(server.address, 0.5).median()
            fault = NeverRead(size=size, stall=0.5)
            with MultiConnClient(server.address, 1, faults=[fault], keep_open=True, seed=rep,
                                 timeout=60) as client:
                client.run().check()
                conn = client.connections[0]
                loaded = probe_latency(server.address, 0.5).median()
                h = server_held_bytes(conn.sock, conn.bytes_out, conn.received)
                held.append(-1 if h is None else h)
                sent.append(conn.bytes_out)
                high = server.high_water
            ratios.append(loaded / base if base else float("nan"))
    print(f"never-read ({size >> 20} MiB offered, {reps} reps): client pushed median "
          f"{statistics.median(sent) >> 10} KiB before the server pushed back; server held median "
          f"{statistics.median(held)} B (high-water {high} B, max {max(held)} B); "
          f"others' echo latency loaded/unloaded median ratio {statistics.median(ratios):.2f}")


def idle(n: int, reps: int) -> None:
    stops, closes = [], []
    for rep in range(reps):
        server = EchoServer(idle_timeout=0.5, backlog=2048).start()
        try:
            with MultiConnClient(server.address, n, faults=[NeverClose()], keep_open=True,
                                 seed=rep, timeout=60) as client:
                client.run().check()
                started = time.monotonic()
                client.wait_closed_by_peer(timeout=30)
                closes.append(time.monotonic() - started)
                assert server.wait_for_idle(10).idle_closed == n
        finally:
            t = time.perf_counter()
            server.stop()
            stops.append(time.perf_counter() - t)
    print(f"{n} never-closing clients: idle_timeout=0.5s closed all in median "
          f"{statistics.median(closes):.3f}s; server stop() median "
          f"{statistics.median(stops) * 1e3:.1f} ms")


def partial(seeds: int) -> None:
    with EchoServer() as server:
        start = time.monotonic()
        for seed in range(seeds):
            MultiConnClient(server.address, 2, faults=[Garbage(256), PartialSend(1, delay=0.0005)],
                            seed=seed, timeout=30).run().check()
    print(f"1-byte partial sends with random pauses: {seeds} seeds x 2 connections byte-exact "
          f"in {time.monotonic() - start:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    never_read(args.size_mib << 20, args.reps)
    idle(args.idle, args.reps)
    partial(args.seeds)


if __name__ == "__main__":
    main()
