"""Echo-server workloads: our EchoServer against asyncio, uvloop and the tutorial, same run.

    python benchmarks/echo.py [--quick] [--servers ours,asyncio,...] [--workloads ...]
                              [--repeat N] [--json FILE]

Each server runs in its own process (benchmarks/servers.py, pinned to CPU 0) and is driven by
the same C load generator (benchmarks/loadgen.c, pinned to CPU 1), which reports its own CPU
use: a figure measured while the generator used more than 90% of its core is flagged
``client-bound``, because then it says more about the client than about the server.  Every
(workload, server) pair is repeated, round-robin across servers so that drift on the shared
machine hits them all alike; we print min/median/max and the ratio of our median to each
baseline's median.

Workloads:
  pp1        ping-pong, 1 connection, 64 B messages (round trips/s)
  pp100      ping-pong, 100 connections, 1 KiB messages (round trips/s)
  stream10   10 connections, each with 64 KiB in flight (MB/s echoed)
  idle10k    10,000 connections: accept rate (connections/s until each has echoed once),
             server memory per connection (RSS delta / N), then one echo on all of them
  idlecpu    server CPU share with 100 idle connections over a fixed window
  push       one client that never reads pushes up to 200 MB: server memory growth
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ALL_SERVERS,
    SATURATED,
    ServerProc,
    available_servers,
    build_loadgen,
    cpu_seconds,
    fmt,
    hwm_bytes,
    machine_note,
    reset_hwm,
    rss_bytes,
    start_loadgen,
    summary,
    tempdir,
)

KIB = 1024
MIB = 1024 * 1024

#: Our EchoServer's default high-water mark: what the push workload's bound is made of.
HIGH_WATER = 64 * KIB


class Config:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.duration = 1.0 if quick else 3.0
        self.warmup = 0.3 if quick else 0.5
        self.repeat = 2 if quick else 5
        self.idle_conns = 2000 if quick else 10_000
        self.idle_repeat = 1 if quick else 3
        self.idle_window = 1.0 if quick else 2.0
        self.push_bytes = (64 if quick else 200) * MIB


# -- one measurement per function; each returns a dict of numbers ------------------------------
def _loadgen_line(run: dict[str, Any]) -> dict[str, Any]:
    cpu = float(run.get("client_cpu", 0.0))
    run["client_bound"] = cpu > SATURATED
    return run


def measure_pingpong(exe: Path, kind: str, cfg: Config, conns: int, size: int, *,
                     latfile: Path | None) -> dict[str, Any]:
    with ServerProc(kind) as server:
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        args = ["-c", str(conns), "-s", str(size), "-d", str(cfg.duration), "-w", str(cfg.warmup)]
        if latfile is not None:
            args += ["-l", str(latfile)]
        run = start_loadgen(exe, "pingpong", server.port, args, timeout=cfg.duration + 30).result()
        run["server_cpu"] = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
    if run["errors"] or run["mismatches"]:
        raise RuntimeError(f"{kind}: ping-pong had {run['errors']} errors, "
                           f"{run['mismatches']} mismatched echoes")
    run["value"] = run["per_sec"]
    return _loadgen_line(run)


def measure_stream(exe: Path, kind: str, cfg: Config, conns: int, window: int) -> dict[str, Any]:
    with ServerProc(kind) as server:
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        args = ["-c", str(conns), "-W", str(window), "-d", str(cfg.duration), "-w", str(cfg.warmup)]
        run = start_loadgen(exe, "stream", server.port, args, timeout=cfg.duration + 30).result()
        run["server_cpu"] = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
    if run["errors"] or run["mismatches"]:
        raise RuntimeError(f"{kind}: streaming had {run['errors']} errors, "
                           f"{run['mismatches']} mismatched chunks")
    run["value"] = run["mb_per_sec"]
    return _loadgen_line(run)


def measure_idle(exe: Path, kind: str, cfg: Config, conns: int, window: float, *,
                 timeout: float = 60.0) -> dict[str, Any]:
    """Open ``conns`` connections, echo once on each, hold them ``window`` s, echo on all."""
    with ServerProc(kind) as server:
        rss0 = rss_bytes(server.pid)
        args = ["-c", str(conns), "-s", "64"]
        lg = start_loadgen(exe, "idle", server.port, args, timeout=timeout)
        ready = lg.ready()
        rss1 = rss_bytes(server.pid)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        # A fixed window on purpose: idle CPU is what the server burns while nothing happens.
        time.sleep(window)
        idle_cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
        lg.release()
        run = lg.result()
    connected = int(ready["connected"])
    run.update(
        complete=connected == conns and not ready["timed_out"],
        rss_before=rss0,
        rss_after=rss1,
        bytes_per_conn=(rss1 - rss0) / max(1, connected),
        idle_cpu=idle_cpu,
    )
    run["value"] = run["accept_rate"]
    return run


def measure_push(exe: Path, kind: str, cfg: Config) -> dict[str, Any]:
    with ServerProc(kind) as server:
        rss0 = rss_bytes(server.pid)
        hwm_reset = reset_hwm(server.pid)
        lg = start_loadgen(exe, "push", server.port, ["-n", str(cfg.push_bytes), "-S", "1"],
                           timeout=30)
        ready = lg.ready()
        growth = (hwm_bytes(server.pid) if hwm_reset else rss_bytes(server.pid)) - rss0
        lg.release()
        run = lg.result()
    run.update(rss_before=rss0, growth=growth, peak_is_hwm=hwm_reset, pushed=ready["pushed"])
    run["value"] = growth
    return run


# -- the workload table ------------------------------------------------------------------------
WORKLOADS: dict[str, dict[str, Any]] = {
    "pp1": {"title": "ping-pong 1 conn x 64 B", "unit": "rt/s", "higher": True},
    "pp100": {"title": "ping-pong 100 conns x 1 KiB", "unit": "rt/s", "higher": True},
    "stream10": {"title": "streaming 10 conns, 64 KiB window", "unit": "MB/s", "higher": True},
    "idle10k": {"title": "idle connections: accept rate", "unit": "conn/s", "higher": True},
    "idlecpu": {"title": "idle CPU, 100 idle connections", "unit": "% CPU", "higher": False},
    "push": {"title": "never-reading client: memory growth", "unit": "MiB", "higher": False},
}


def run_workloads(  # noqa: PLR0912 - one branch per workload, on purpose
    servers: Sequence[str],
    workloads: Sequence[str],
    cfg: Config,
    latency_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    exe = build_loadgen()
    results: dict[str, Any] = {}
    for wl in workloads:
        repeat = cfg.repeat
        if wl in ("idle10k", "push", "idlecpu"):
            repeat = cfg.idle_repeat
        per_server: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
        notes: list[str] = []
        for rep in range(repeat):
            for kind in servers:
                if wl in ("idle10k", "push") and kind == "tutorial" and rep > 0:
                    # O(N) work per loop turn, quadratic buffering: one bounded try says enough
                    continue
                lat = None
                if latency_dir is not None and wl in ("pp1", "pp100"):
                    lat = latency_dir / f"{wl}-{kind}-{rep}.f32"
                try:
                    if wl == "pp1":
                        run = measure_pingpong(exe, kind, cfg, 1, 64, latfile=lat)
                    elif wl == "pp100":
                        run = measure_pingpong(exe, kind, cfg, 100, KIB, latfile=lat)
                    elif wl == "stream10":
                        run = measure_stream(exe, kind, cfg, 10, 64 * KIB)
                    elif wl == "idle10k":
                        run = measure_idle(exe, kind, cfg, cfg.idle_conns, 0.2,
                                           timeout=15.0 if kind == "tutorial" else 60.0)
                    elif wl == "idlecpu":
                        run = measure_idle(exe, kind, cfg, 100, cfg.idle_window)
                        run["value"] = run["idle_cpu"] * 100
                    elif wl == "push":
                        run = measure_push(exe, kind, cfg)
                    else:
                        raise ValueError(f"unknown workload {wl!r}; choose from {list(WORKLOADS)}")
                except RuntimeError as exc:
                    notes.append(f"{kind} run {rep + 1}: {exc}")
                    log(f"  {wl:9} {kind:9} FAILED: {exc}")
                    continue
                if lat is not None:
                    run["latency_file"] = str(lat)
                per_server[kind].append(run)
                flag = " client-bound" if run.get("client_bound") else ""
                log(f"  {wl:9} {kind:9} run {rep + 1}/{repeat}: {fmt(run['value'])}{flag}")
        results[wl] = {"runs": per_server, "notes": notes, **WORKLOADS[wl]}
        results[wl]["summary"] = {
            k: summary([r["value"] for r in v]) for k, v in per_server.items()
        }
    return results


def ratios(results: dict[str, Any], wl: str) -> dict[str, float]:
    """Our median over each baseline's median (for "lower is better" figures: theirs / ours)."""
    summ = results[wl]["summary"]
    if "ours" not in summ:
        return {}
    ours = summ["ours"]["median"]
    out = {}
    for kind, s in summ.items():
        if kind == "ours" or not s["n"] or math.isnan(ours):
            continue
        theirs = s["median"]
        if results[wl]["higher"]:
            out[kind] = ours / theirs if theirs else float("inf")
        else:
            out[kind] = theirs / ours if ours else float("inf")
    return out


def print_report(results: dict[str, Any], servers: Sequence[str]) -> None:
    for wl, res in results.items():
        unit = res["unit"]
        print(f"\n{res['title']} ({unit}; {'higher' if res['higher'] else 'lower'} is better)")
        for kind in servers:
            s = res["summary"].get(kind)
            runs = res["runs"].get(kind, [])
            if not s or not s["n"]:
                print(f"  {kind:9} no result")
                continue
            scale = 1 / MIB if wl == "push" else 1.0
            extra = ""
            if wl in ("pp1", "pp100", "stream10"):
                ccpu = max(r["client_cpu"] for r in runs)
                scpu = sum(r["server_cpu"] for r in runs) / len(runs)
                extra = f"  server CPU {scpu:.0%}, load generator CPU <= {ccpu:.0%}"
                if ccpu > SATURATED:
                    extra += " (load generator near saturation: client-bound)"
            elif wl == "idle10k":
                mem = summary([r["bytes_per_conn"] for r in runs])
                complete = all(r["complete"] for r in runs)
                extra = (f"  memory {fmt(mem['median'])} B/conn"
                         f"{'' if complete else ' (INCOMPLETE: timed out)'}")
            print(f"  {kind:9} min {fmt(s['min'] * scale):>9}"
                  f"  median {fmt(s['median'] * scale):>9}"
                  f"  max {fmt(s['max'] * scale):>9}  (n={s['n']}){extra}")
        r = ratios(results, wl) if wl not in ("idlecpu", "push") else {}
        if r:
            print("  ours vs " + ", ".join(f"{k}: {v:.2f}x" for k, v in r.items()))
        for note in res["notes"]:
            print(f"  note: {note}")


def latency_samples(results: dict[str, Any], wl: str, kind: str) -> array[float]:
    samples: array[float] = array("f")
    for run in results.get(wl, {}).get("runs", {}).get(kind, []):
        path = run.get("latency_file")
        if path and os.path.exists(path):
            samples.frombytes(Path(path).read_bytes())
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 2 repetitions")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--repeat", type=int, help="repetitions per (workload, server)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args(argv)
    cfg = Config(args.quick)
    if args.repeat:
        cfg.repeat = args.repeat
    servers, notes = available_servers(args.servers.split(","))
    for note in notes:
        print(f"note: {note}")
    print(f"machine: {machine_note()}")
    latdir = tempdir("multiconn-lat-")
    results = run_workloads(servers, args.workloads.split(","), cfg, latdir)
    print_report(results, servers)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
