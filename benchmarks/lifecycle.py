"""Start and stop costs of :class:`EchoServer`, measured in this process.

    python benchmarks/lifecycle.py [--quick] [--json FILE]

* ``start()`` + ``stop()`` of an idle server (median of many);
* ``stop()`` with 100 idle clients connected (each repetition opens 100 connections, waits
  until the server has accepted them all, then times ``stop()`` alone);
* on one shared loop thread, as the ``multiconn_server`` fixture runs them: ``start()`` +
  ``stop()``, and ``start()``, one client that sends 4 bytes, reads them back and closes, and
  ``stop()``, back to back.  The exchange's figure is mostly the hand-offs between this
  thread and the loop thread: on a machine whose idle CPUs halt, each wakes one (three times
  cheaper with a CPU burner beside it: ``benchmarks/results/issue25.md``, ninth session).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pytest_multiconn import EchoServer
from pytest_multiconn.core.shared import SharedLoop


def start_stop(reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        server = EchoServer().start()
        server.stop()
        times.append(time.perf_counter() - t0)
        server.check()
    return times


def stop_with_clients(reps: int, clients: int = 100) -> list[float]:
    times = []
    for _ in range(reps):
        server = EchoServer().start()
        socks: list[socket.socket] = []
        try:
            for _ in range(clients):
                socks.append(socket.create_connection(server.address, timeout=10))
            server.wait_for_connections(clients, timeout=10)
            t0 = time.perf_counter()
            server.stop()
            times.append(time.perf_counter() - t0)
            server.check()
        finally:
            server.stop()
            for s in socks:
                s.close()
    return times


def shared_loop(reps: int, exchange: bool) -> list[float]:
    times = []
    shared = SharedLoop("multiconn-bench")
    try:
        EchoServer(loop=shared).start().stop()  # the loop thread starts here, untimed
        for _ in range(reps):
            t0 = time.perf_counter()
            server = EchoServer(loop=shared).start()
            if exchange:
                with socket.create_connection(server.address, timeout=10) as sock:
                    sock.sendall(b"ping")
                    got = b""
                    while len(got) < 4:
                        chunk = sock.recv(64)
                        if not chunk:
                            raise RuntimeError("the server closed before echoing 4 bytes")
                        got += chunk
            server.stop()
            times.append(time.perf_counter() - t0)
            server.check()
    finally:
        shared.close()
    return times


def _summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times) * 1e3, "min": min(times) * 1e3,
            "max": max(times) * 1e3, "n": len(times)}


def run(quick: bool, log: Any = print) -> dict[str, Any]:
    ss = start_stop(100 if quick else 500)
    sc = stop_with_clients(10 if quick else 30)
    # Interleaved blocks, so that neither figure gets the quieter half of the run.
    shared_idle: list[float] = []
    shared_exchange: list[float] = []
    for _ in range(2 if quick else 5):
        shared_idle += shared_loop(100 if quick else 400, exchange=False)
        shared_exchange += shared_loop(100 if quick else 400, exchange=True)
    res = {
        "start_stop_ms": {"median": statistics.median(ss) * 1e3, "min": min(ss) * 1e3,
                          "max": max(ss) * 1e3, "n": len(ss)},
        "stop_100_clients_ms": {"median": statistics.median(sc) * 1e3, "min": min(sc) * 1e3,
                                "max": max(sc) * 1e3, "n": len(sc)},
        "shared_start_stop_ms": _summary(shared_idle),
        "shared_exchange_ms": _summary(shared_exchange),
    }
    log(f"  lifecycle start+stop: median {res['start_stop_ms']['median']:.3f} ms; "
        f"stop() with 100 clients: median {res['stop_100_clients_ms']['median']:.3f} ms")
    return res


def print_report(res: dict[str, Any]) -> None:
    print("\nserver life cycle (in-process, ms)")
    for key, title in (("start_stop_ms", "start() + stop(), idle"),
                       ("stop_100_clients_ms", "stop() with 100 idle clients"),
                       ("shared_start_stop_ms", "shared loop: start() + stop()"),
                       ("shared_exchange_ms", "shared loop: + one exchange")):
        s = res[key]
        print(f"  {title:32} min {s['min']:7.3f}  median {s['median']:7.3f}  max {s['max']:7.3f}"
              f"  (n={s['n']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    res = run(args.quick)
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
