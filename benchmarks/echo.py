"""Echo-server workloads: our EchoServer against asyncio and uvloop, same run, warm and primed.

    python benchmarks/echo.py [--quick] [--servers ours,asyncio,uvloop[,tutorial]]
                              [--workloads ...] [--rounds N] [--json FILE]

Each server runs in its own process (benchmarks/servers.py, pinned to CPU 0) and is driven by
the same C load generator (benchmarks/loadgen.c, pinned to CPU 1).  Method:

* **Primed.**  Before anything is timed, every server serves one connection that echoes 64 KiB,
  half-closes and waits for the server's close (``ServerProc.prime``).  A fresh CPython 3.11
  asyncio process otherwise runs far slower until its first 256 KiB receive buffer is freed
  (glibc serves each ``recv(262144)`` with mmap/munmap until then); one closed connection ends
  that state, traffic on the same connections does not.
* **Warm and interleaved.**  The throughput workloads (pp100, stream10, pp1) run against one
  long-lived process per server; round r runs every server once, the order rotated each round
  (ABC, BCA, CAB, ...), so drift on the shared machine hits them all alike.  Medians of the
  rounds; the ratios are medians of the per-round ratios (paired within a round).
* **Server CPU per operation.**  The load generator reads the server's CPU time (every thread,
  /proc/PID/task/*/schedstat) at the start and end of its measured window, so CPU per round
  trip, per MB or per accepted connection covers exactly the operations counted.  On a shared
  2-core machine this and the ratios are the trustworthy figures; absolute rates are not.
* A run in which the load generator used more than 90% of its core is flagged
  ``client-bound``: then it says more about the client than about the server.

Workloads:
  pp100      ping-pong, 100 connections, 1 KiB messages (round trips/s; server us/round trip)
  stream10   10 connections, each with 64 KiB in flight (MB/s echoed; server ms/MB)
  pp1        ping-pong, 1 connection, 64 B messages (round trips/s; wake-up latency bound)
  idle10k    a fresh, primed process per run: N connections, echo once on each (accept rate,
             server us/connection), server memory per connection (RSS delta / N)
  idlecpu    a fresh, primed process: server CPU share with 100 idle connections
  push       a fresh, primed process: one client that never reads pushes up to 200 MB
  pp100cold  COLD START, labelled as such: pp100 against a fresh process that was not primed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ALL_SERVERS,
    DEFAULT_SERVERS,
    SATURATED,
    ServerProc,
    available_servers,
    build_loadgen,
    fmt,
    hwm_bytes,
    machine_note,
    reset_hwm,
    rss_bytes,
    start_loadgen,
    summary,
)

KIB = 1024
MIB = 1024 * 1024

#: Our EchoServer's default high-water mark: what the push workload's bound is made of.
HIGH_WATER = 64 * KIB


class Config:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.duration = 0.5 if quick else 3.0
        self.warmup = 0.2 if quick else 0.5
        self.rounds = 3 if quick else 7
        self.idle_conns = 2000 if quick else 10_000
        self.idle_rounds = 3 if quick else 5
        self.idle_window = 0.5 if quick else 2.0
        self.push_bytes = (64 if quick else 200) * MIB
        self.cold_rounds = 1 if quick else 3


# -- one measurement per function; each returns a dict of numbers ------------------------------
def _finish(run: dict[str, Any], kind: str, what: str, ops: float) -> dict[str, Any]:
    if run.get("errors") or run.get("mismatches"):
        raise RuntimeError(f"{kind}: {what} had {run.get('errors')} errors, "
                           f"{run.get('mismatches')} mismatched echoes")
    cpu = float(run.get("client_cpu", 0.0))
    run["client_bound"] = cpu > SATURATED
    scpu = float(run.get("server_cpu_s", -1.0))
    run["server_cpu_per_op"] = scpu / ops if scpu >= 0 and ops > 0 else float("nan")
    wall = float(run.get("wall", 0.0))
    run["server_cpu_share"] = scpu / wall if scpu >= 0 and wall > 0 else float("nan")
    return run


def measure_pingpong(exe: Path, server: ServerProc, cfg: Config, conns: int, size: int, *,
                     latfile: Path | None) -> dict[str, Any]:
    args = ["-c", str(conns), "-s", str(size), "-d", str(cfg.duration), "-w", str(cfg.warmup),
            "-p", str(server.pid)]
    if latfile is not None:
        args += ["-l", str(latfile)]
    run = start_loadgen(exe, "pingpong", server.port, args, timeout=cfg.duration + 30).result()
    run["value"] = run["per_sec"]
    # CPU per round trip in microseconds.
    return _finish(run, server.kind, "ping-pong", run["round_trips"] / 1e6)


def measure_stream(exe: Path, server: ServerProc, cfg: Config, conns: int,
                   window: int) -> dict[str, Any]:
    args = ["-c", str(conns), "-W", str(window), "-d", str(cfg.duration), "-w", str(cfg.warmup),
            "-p", str(server.pid)]
    run = start_loadgen(exe, "stream", server.port, args, timeout=cfg.duration + 30).result()
    run["value"] = run["mb_per_sec"]
    # CPU per MB echoed, in milliseconds.
    return _finish(run, server.kind, "streaming", run["bytes"] / 1e6 / 1e3)


def measure_idle(exe: Path, kind: str, cfg: Config, conns: int, window: float, *,
                 timeout: float = 60.0) -> dict[str, Any]:
    """Fresh primed process: open ``conns`` connections, echo once on each, hold them
    ``window`` s (fixed on purpose: idle CPU is what the server burns while nothing happens),
    echo on all of them again."""
    with ServerProc(kind) as server:
        server.prime()
        rss0 = rss_bytes(server.pid)
        lg = start_loadgen(exe, "idle", server.port, ["-c", str(conns), "-s", "64",
                                                      "-p", str(server.pid)], timeout=timeout)
        ready = lg.ready()
        rss1 = rss_bytes(server.pid)
        cpu0 = server_cpu(server.pid)
        t0 = time.monotonic()
        time.sleep(window)
        idle_cpu = (server_cpu(server.pid) - cpu0) / (time.monotonic() - t0)
        lg.release()
        run = lg.result()
    connected = int(ready["connected"])
    run.update(
        complete=connected == conns and not ready["timed_out"],
        rss_before=rss0,
        rss_after=rss1,
        bytes_per_conn=(rss1 - rss0) / max(1, connected),
        idle_cpu=idle_cpu,
        value=run["accept_rate"],
    )
    scpu = float(run.get("accept_server_cpu_s", -1.0))
    # Server CPU per accepted (and once echoed) connection, in microseconds.
    run["server_cpu_per_op"] = scpu / connected * 1e6 if scpu >= 0 and connected else math.nan
    run["server_cpu_share"] = scpu / run["connect_wall"] if scpu >= 0 else math.nan
    run["client_bound"] = float(run.get("connect_client_cpu", 0.0)) > SATURATED
    return run


def server_cpu(pid: int) -> float:
    """CPU seconds of every thread of ``pid`` (schedstat, nanoseconds)."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0]) / 1e9
    return total


def measure_push(exe: Path, kind: str, cfg: Config) -> dict[str, Any]:
    with ServerProc(kind) as server:
        server.prime()
        rss0 = rss_bytes(server.pid)
        hwm_reset = reset_hwm(server.pid)
        lg = start_loadgen(exe, "push", server.port, ["-n", str(cfg.push_bytes), "-S", "1"],
                           timeout=30)
        ready = lg.ready()
        growth = (hwm_bytes(server.pid) if hwm_reset else rss_bytes(server.pid)) - rss0
        lg.release()
        run = lg.result()
    run.update(rss_before=rss0, growth=growth, peak_is_hwm=hwm_reset, pushed=ready["pushed"],
               value=growth)
    return run


# -- the workload table ------------------------------------------------------------------------
WORKLOADS: dict[str, dict[str, Any]] = {
    "pp100": {"title": "ping-pong 100 conns x 1 KiB", "unit": "rt/s", "higher": True,
              "cpu_unit": "us/rt", "warm": True},
    "stream10": {"title": "streaming 10 conns, 64 KiB window", "unit": "MB/s", "higher": True,
                 "cpu_unit": "ms/MB", "warm": True},
    "pp1": {"title": "ping-pong 1 conn x 64 B", "unit": "rt/s", "higher": True,
            "cpu_unit": "us/rt", "warm": True},
    "idle10k": {"title": "accept rate, N connections echoing once", "unit": "conn/s",
                "higher": True, "cpu_unit": "us/conn", "warm": False},
    "idlecpu": {"title": "idle CPU, 100 idle connections", "unit": "% CPU", "higher": False,
                "warm": False},
    "push": {"title": "never-reading client: memory growth", "unit": "MiB", "higher": False,
             "warm": False},
    "pp100cold": {"title": "COLD START (fresh process, not primed): ping-pong 100 x 1 KiB",
                  "unit": "rt/s", "higher": True, "cpu_unit": "us/rt", "warm": False},
}
DEFAULT_WORKLOADS = ("pp100", "stream10", "pp1", "idle10k", "idlecpu", "push", "pp100cold")


def _rotated(servers: Sequence[str], r: int) -> list[str]:
    k = r % len(servers)
    return [*servers[k:], *servers[:k]]


def _one(exe: Path, wl: str, server: ServerProc, cfg: Config,
         lat: Path | None) -> dict[str, Any]:
    if wl in ("pp100", "pp100cold"):
        return measure_pingpong(exe, server, cfg, 100, KIB, latfile=lat)
    if wl == "stream10":
        return measure_stream(exe, server, cfg, 10, 64 * KIB)
    if wl == "pp1":
        return measure_pingpong(exe, server, cfg, 1, 64, latfile=lat)
    raise ValueError(f"unknown warm workload {wl!r}")


def run_workloads(  # noqa: PLR0912 - one branch per workload kind, on purpose
    servers: Sequence[str],
    workloads: Sequence[str],
    cfg: Config,
    latency_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    unknown = [wl for wl in workloads if wl not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    exe = build_loadgen()
    results: dict[str, Any] = {}
    per: dict[str, dict[str, list[dict[str, Any]]]] = {
        wl: {k: [] for k in servers} for wl in workloads}
    order: dict[str, list[list[str]]] = {wl: [] for wl in workloads}
    notes: dict[str, list[str]] = {wl: [] for wl in workloads}

    def record(wl: str, kind: str, r: int, rounds: int, run: dict[str, Any]) -> None:
        run["round"] = r
        per[wl][kind].append(run)
        flag = " client-bound" if run.get("client_bound") else ""
        cpu = run.get("server_cpu_per_op", math.nan)
        cpu_txt = f", server {fmt(cpu)} {WORKLOADS[wl].get('cpu_unit', '')}" \
            if not math.isnan(cpu) else ""
        log(f"  {wl:9} {kind:9} round {r + 1}/{rounds}: {fmt(run['value'])} "
            f"{WORKLOADS[wl]['unit']}{cpu_txt}{flag}")

    def lat_file(wl: str, kind: str, r: int) -> Path | None:
        if latency_dir is None or wl not in ("pp1", "pp100"):
            return None
        return latency_dir / f"{wl}-{kind}-{r}.f32"

    # Warm workloads: one long-lived, primed process per server for all of them.
    warm = [wl for wl in workloads if WORKLOADS[wl]["warm"]]
    if warm:
        procs: dict[str, ServerProc] = {}
        try:
            for kind in servers:
                procs[kind] = ServerProc(kind)
            for kind in servers:
                procs[kind].prime()
            log(f"  started and primed {', '.join(servers)} (one 64 KiB echo + close each)")
            for wl in warm:
                for r in range(cfg.rounds):
                    seq = _rotated(servers, r)
                    order[wl].append(seq)
                    for kind in seq:
                        if not procs[kind].alive():
                            raise RuntimeError(f"{kind} server exited during the run")
                        lat = lat_file(wl, kind, r)
                        try:
                            run = _one(exe, wl, procs[kind], cfg, lat)
                        except RuntimeError as exc:
                            notes[wl].append(f"{kind} round {r + 1}: {exc}")
                            log(f"  {wl:9} {kind:9} FAILED: {exc}")
                            continue
                        if lat is not None:
                            run["latency_file"] = str(lat)
                        record(wl, kind, r, cfg.rounds, run)
        finally:
            for proc in procs.values():
                proc.close()

    # Fresh-process workloads: each run gets its own process (memory figures need one).
    for wl in (w for w in workloads if not WORKLOADS[w]["warm"]):
        rounds = {"pp100cold": cfg.cold_rounds, "idle10k": cfg.idle_rounds}.get(wl, 1)
        for r in range(rounds):
            seq = _rotated(servers, r)
            order[wl].append(seq)
            for kind in seq:
                try:
                    if wl == "pp100cold":
                        with ServerProc(kind) as server:  # deliberately not primed
                            run = _one(exe, wl, server, cfg, None)
                    elif wl == "idle10k":
                        if kind == "tutorial" and r > 0:
                            continue  # O(N) per loop turn: one bounded try says enough
                        run = measure_idle(exe, kind, cfg, cfg.idle_conns, 0.2,
                                           timeout=15.0 if kind == "tutorial" else 60.0)
                    elif wl == "idlecpu":
                        run = measure_idle(exe, kind, cfg, 100, cfg.idle_window)
                        run["value"] = run["idle_cpu"] * 100
                        run["server_cpu_per_op"] = math.nan
                    else:  # push
                        run = measure_push(exe, kind, cfg)
                except RuntimeError as exc:
                    notes[wl].append(f"{kind} round {r + 1}: {exc}")
                    log(f"  {wl:9} {kind:9} FAILED: {exc}")
                    continue
                record(wl, kind, r, rounds, run)

    for wl in workloads:
        results[wl] = {"runs": per[wl], "notes": notes[wl], "order": order[wl], **WORKLOADS[wl]}
        results[wl]["summary"] = {k: summary([r["value"] for r in v]) for k, v in per[wl].items()}
        results[wl]["cpu_summary"] = {
            k: summary([r["server_cpu_per_op"] for r in v
                        if not math.isnan(r.get("server_cpu_per_op", math.nan))])
            for k, v in per[wl].items()}
        results[wl]["ratios"] = ratios(results, wl)
    return results


def ratios(results: dict[str, Any], wl: str) -> dict[str, float]:
    """Ours over each baseline: the median of the per-round ratios (paired within a round,
    so drift between rounds cancels); for "lower is better" figures, theirs / ours."""
    res = results[wl]
    runs = res["runs"]
    if "ours" not in runs or not runs["ours"]:
        return {}
    ours = {r["round"]: r["value"] for r in runs["ours"]}
    out = {}
    for kind, rs in runs.items():
        if kind == "ours":
            continue
        paired = []
        for r in rs:
            o = ours.get(r["round"])
            if o is None:
                continue
            a, b = (o, r["value"]) if res["higher"] else (r["value"], o)
            if b:
                paired.append(a / b)
        if paired:
            out[kind] = statistics.median(paired)
    return out


def cpu_ratios(results: dict[str, Any], wl: str) -> dict[str, float]:
    """Our server CPU per operation over each baseline's (medians; below 1 means we use less)."""
    cs = results[wl].get("cpu_summary", {})
    if "ours" not in cs or not cs["ours"]["n"]:
        return {}
    ours = cs["ours"]["median"]
    return {k: ours / s["median"] for k, s in cs.items()
            if k != "ours" and s["n"] and s["median"]}


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
            cs = res.get("cpu_summary", {}).get(kind)
            if cs and cs["n"]:
                extra += f"  server CPU {fmt(cs['median'])} {res['cpu_unit']}"
                share = [r["server_cpu_share"] for r in runs
                         if not math.isnan(r.get("server_cpu_share", math.nan))]
                if share:
                    extra += f" (at {statistics.median(share):.0%} of a core)"
            if "client_cpu" in (runs[0] if runs else {}):
                ccpu = max(r["client_cpu"] for r in runs)
                extra += f", load generator <= {ccpu:.0%}"
                if ccpu > SATURATED:
                    extra += " (client-bound)"
            if wl == "idle10k":
                mem = summary([r["bytes_per_conn"] for r in runs])
                complete = all(r["complete"] for r in runs)
                extra += (f"  memory {fmt(mem['median'])} B/conn"
                          f"{'' if complete else ' (INCOMPLETE: timed out)'}")
            print(f"  {kind:9} min {fmt(s['min'] * scale):>9}"
                  f"  median {fmt(s['median'] * scale):>9}"
                  f"  max {fmt(s['max'] * scale):>9}  (n={s['n']}){extra}")
        r = res.get("ratios", {}) if wl not in ("idlecpu", "push") else {}
        if r:
            print("  ours vs " + ", ".join(f"{k}: {v:.2f}x" for k, v in r.items())
                  + "  (median of per-round ratios)")
        cr = cpu_ratios(results, wl)
        if cr:
            print("  our server CPU per op / theirs: "
                  + ", ".join(f"{k}: {v:.2f}" for k, v in cr.items()) + "  (below 1: we use less)")
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
    parser.add_argument("--quick", action="store_true", help="short runs, 3 rounds")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"from {','.join(ALL_SERVERS)}")
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    parser.add_argument("--rounds", "--repeat", type=int,
                        help="rounds per warm workload (>= 5 for claims; --repeat: old name)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args(argv)
    cfg = Config(args.quick)
    if args.rounds:
        cfg.rounds = args.rounds
    servers, notes = available_servers(args.servers.split(","))
    for note in notes:
        print(f"note: {note}")
    print(f"machine: {machine_note()}")
    with tempfile.TemporaryDirectory(prefix="multiconn-lat-") as latdir:
        results = run_workloads(servers, args.workloads.split(","), cfg, Path(latdir))
        print_report(results, servers)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
