"""Run the whole benchmark suite (what ``make bench`` runs) and check the project's targets.

    python benchmarks/run_all.py [--quick] [--servers ...] [--skip echo,lifecycle,...]

In one invocation: the echo workloads against asyncio and uvloop (benchmarks/echo.py: primed,
warm, interleaved rounds, server CPU per operation), the server life cycle
(benchmarks/lifecycle.py), the fixture's wall time per test in a fresh project
(benchmarks/fixture.py), the fault-injection suite's wall time (benchmarks/suite.py), and
redis-benchmark through our proxy, socat and an asyncio relay (benchmarks/proxy.py); then a
table of the targets with PASS/MISS.

A full run writes, in benchmarks/results/: ``latest.json`` (every raw number),
``README-table.md`` (the README's tables, with the machine, the date, the commit and this
command) and ``latency.png``.  ``--quick`` (short runs, to check the machinery) writes
``quick.json`` / ``README-table-quick.md`` / ``latency-quick.png`` instead (not tracked): quick
figures are not for publishing.  Neither are figures from a machine that is doing anything
else: the load average is recorded at the start and the end, and a warning printed when the
machine was not quiet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import echo
import fixture
import lifecycle
import proxy
import suite
from _common import (
    ALL_SERVERS,
    DEFAULT_SERVERS,
    RESULTS,
    ROOT,
    available_servers,
    fmt,
    machine_note,
)

MIB = 1024 * 1024
SECTIONS = ("echo", "lifecycle", "fixture", "suite", "proxy")
#: Load average (1 min) above which the figures are not from a quiet machine.
QUIET_LOAD = 0.5


def plot_latency(results: dict[str, Any], servers: list[str], path: Path) -> str | None:
    """ECDF of round-trip times per server for the ping-pong workloads; None if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no latency plot"
    wls = [wl for wl in ("pp1", "pp100") if wl in results]
    if not wls:
        return "no ping-pong workload was run: no latency plot"
    fig, axes = plt.subplots(1, len(wls), figsize=(6.5 * len(wls), 4.5), squeeze=False)
    for ax, wl in zip(axes[0], wls, strict=True):
        for kind in servers:
            samples = sorted(echo.latency_samples(results, wl, kind))
            if not samples:
                continue
            step = max(1, len(samples) // 4000)  # a few thousand points draw the same curve
            xs = samples[::step]
            ys = [i * step / len(samples) for i in range(len(xs))]
            p50 = samples[len(samples) // 2]
            p99 = samples[int(len(samples) * 0.99)]
            ax.plot(xs, ys, label=f"{kind} (p50 {p50:.0f} µs, p99 {p99:.0f} µs)")
        ax.set_xscale("log")
        ax.set_xlabel("round-trip time (µs, log scale)")
        ax.set_ylabel("fraction of round trips")
        ax.set_title(results[wl]["title"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Echo round-trip latency (warm, primed servers), same C load generator",
                 fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def percentiles(results: dict[str, Any], wl: str, kind: str) -> dict[str, float]:
    samples = sorted(echo.latency_samples(results, wl, kind))
    if not samples:
        return {}
    return {f"p{p}": samples[min(len(samples) - 1, int(len(samples) * p / 100))]
            for p in (50, 90, 99, 99.9)}


Row = tuple[str, str, str, bool | None]


def targets(res: dict[str, Any]) -> list[Row]:
    """(target, required, measured, met) rows; met is None where it could not be measured."""
    rows: list[Row] = []
    wl = res.get("workloads", {})

    def add(name: str, need: str, value: float | None, ok: bool | None, text: str) -> None:
        rows.append((name, need, "n/a" if value is None or math.isnan(value) else text,
                     None if value is None or math.isnan(value) else ok))

    for name, label in (("pp100", "ping-pong 100 x 1 KiB"), ("stream10", "streaming 10 x 64 KiB")):
        if name not in wl:
            continue
        r = wl[name]["ratios"].get("asyncio")
        add(f"{label}: ours / asyncio (warm)", ">= 1.0x", r, r is not None and r >= 1.0,
            f"{r:.2f}x" if r else "")
        r = wl[name]["ratios"].get("uvloop")
        add(f"{label}: ours / uvloop", "(reported)", r, None, f"{r:.2f}x" if r else "")
        c = echo.cpu_ratios(wl, name).get("uvloop")
        add(f"{label}: server CPU/op, ours / uvloop", "<= 1.0", c, c is not None and c <= 1.0,
            f"{c:.2f}" if c else "")
    if "idle10k" in wl and wl["idle10k"]["runs"].get("ours"):
        runs = wl["idle10k"]["runs"]["ours"]
        mem = float(sorted(r["bytes_per_conn"] for r in runs)[len(runs) // 2])
        add(f"memory per idle connection ({runs[0]['conns']:,} conns)", "<= 2048 B", mem,
            mem <= 2048, f"{fmt(mem)} B")
        r = wl["idle10k"]["ratios"].get("asyncio")
        add("accept rate: ours / asyncio", "(reported)", r, None, f"{r:.2f}x" if r else "")
    if "push" in wl and wl["push"]["summary"].get("ours", {}).get("n"):
        growth = wl["push"]["summary"]["ours"]["median"]
        limit = echo.HIGH_WATER + MIB
        add("never-reading client: memory growth", f"<= {fmt(limit / 1024)} KiB", growth,
            growth <= limit, f"{fmt(growth / 1024)} KiB")
    if "idlecpu" in wl and wl["idlecpu"]["summary"].get("ours", {}).get("n"):
        cpu = wl["idlecpu"]["summary"]["ours"]["median"]
        add("idle CPU, 100 idle connections", "about 0%", cpu, cpu < 1.0, f"{cpu:.1f}%")
    if "fixture" in res:
        fx = res["fixture"]["wall_ms_per_test"]
        def noisy(variant: str) -> bool:
            by_round = res["fixture"]["wall_ms_per_test_rounds"].get(variant, [])
            return bool(by_round) and (min(by_round) < 0 or max(by_round) - min(by_round) > 0.5)

        v = fx.get("exchange")
        add("fixture + one 4-byte exchange, wall per test", "<= 0.3 ms", v,
            None if noisy("exchange") else (v is not None and v <= 0.3),
            f"{v:.3f} ms{' NOISY' if noisy('exchange') else ''}" if v is not None else "")
        v = fx.get("server")
        add("fixture alone, wall per test", "(reported)", v, None,
            f"{v:.3f} ms{' NOISY' if noisy('server') else ''}" if v is not None else "")
    if "suite" in res:
        s = res["suite"]["wall_s"]["median"]
        add("multiconn suite against our server, wall", "< 2 s", s, s < 2.0, f"{s:.2f} s")
    if "proxy" in res and "summary" in res["proxy"]:
        v = res["proxy"]["vs_best_peer"]
        add("proxy, redis: ours / best of socat and asyncio relay", ">= 1.2x", v, v >= 1.2,
            f"{v:.2f}x")
    if "lifecycle" in res:
        stop = res["lifecycle"]["stop_100_clients_ms"]["median"]
        add("stop() with 100 idle clients", "<= 20 ms", stop, stop <= 20, f"{stop:.2f} ms")
        ss = res["lifecycle"]["start_stop_ms"]["median"]
        add("start() + stop(), in process", "(reported)", ss, None, f"{ss:.3f} ms")
    return rows


# -- the README tables -------------------------------------------------------------------------
def _cell(s: dict[str, float] | None, scale: float = 1.0) -> str:
    if not s or not s.get("n"):
        return "n/a"
    return fmt(s["median"] * scale)


def markdown(res: dict[str, Any], servers: list[str]) -> str:  # noqa: PLR0912 - one block per table, on purpose
    out: list[str] = []
    m = res["meta"]
    out.append(f"Measured {m['date']} on {m['machine']}; load average {m['load_start']} at the "
               f"start, {m['load_end']} at the end; commit `{m['commit']}`.")
    out.append(f"Command: `{m['command']}`" + (" (QUICK MODE: not for publishing)"
                                               if res["quick"] else "") + ".")
    out.append("")
    wl = res.get("workloads", {})
    if wl:
        others = [s for s in servers if s != "ours"]
        out.append("Echo servers, each primed (one connection echoed and closed) and warm; "
                   f"medians of {res['rounds']} interleaved rounds; ratios are medians of the "
                   "per-round ratios, from the same run. Server CPU per operation is the server "
                   "process's CPU time over the load generator's measured window.")
        out.append("")
        head = "| workload | " + " | ".join(servers) + " | " + " | ".join(
            f"ours / {o}" for o in others) + " |"
        out += [head, "|" + "---|" * (1 + len(servers) + len(others))]
        for name in ("pp100", "stream10", "pp1", "idle10k", "pp100cold"):
            if name not in wl:
                continue
            r = wl[name]
            title = r["title"]
            if name == "idle10k":
                n = next((x[0]["conns"] for x in r["runs"].values() if x), 0)
                title = f"accept {n:,} connections, echo once each"
            cells = [_cell(r["summary"].get(k)) for k in servers]
            rat = [f"{r['ratios'][o]:.2f}x" if o in r["ratios"] else "n/a" for o in others]
            out.append(f"| {title} ({r['unit']}) | " + " | ".join(cells) + " | "
                       + " | ".join(rat) + " |")
            if r.get("cpu_unit"):
                cpu = [_cell(r["cpu_summary"].get(k)) for k in servers]
                cr = echo.cpu_ratios(wl, name)
                crt = [f"{cr[o]:.2f}" if o in cr else "n/a" for o in others]
                out.append(f"| ... server CPU per op ({r['cpu_unit']}; lower is better) | "
                           + " | ".join(cpu) + " | " + " | ".join(crt) + " |")
        if "idle10k" in wl:
            mem = []
            for k in servers:
                runs = wl["idle10k"]["runs"].get(k) or []
                vals = sorted(x["bytes_per_conn"] for x in runs)
                mem.append(f"{fmt(vals[len(vals) // 2])} B" if vals else "n/a")
            out.append("| server memory per idle connection | " + " | ".join(mem) + " | "
                       + " | ".join("" for _ in others) + " |")
        if "idlecpu" in wl:
            out.append("| idle CPU, 100 idle connections | " + " | ".join(
                f"{_cell(wl['idlecpu']['summary'].get(k))}%" for k in servers) + " | "
                + " | ".join("" for _ in others) + " |")
        if "push" in wl:
            out.append("| never-reading client: server memory growth (MiB) | " + " | ".join(
                _cell(wl["push"]["summary"].get(k), 1 / MIB) for k in servers) + " | "
                + " | ".join("" for _ in others) + " |")
        out.append("")
    if "fixture" in res:
        fx = res["fixture"]
        out.append(f"Function-scoped `multiconn_server`, per test: wall time of a fresh "
                   f"{fx['tests']}-test file minus an empty {fx['tests']}-test file, same "
                   f"plugin set, median of {len(fx['rounds'])} rounds; beside it pytest's own "
                   "phase durations (minus the empty test's).")
        out.append("")
        out += ["| per test | wall time | first to last test | setup | call | teardown |",
                "|---|---|---|---|---|---|"]
        labels = {"server": "fixture alone", "exchange": "fixture + one 4-byte exchange",
                  "httpserver": "function-scoped pytest-httpserver (for comparison)"}
        for v, ms in fx["wall_ms_per_test"].items():
            ph = fx["in_process_ms"][v]
            out.append(f"| {labels.get(v, v)} | {ms:.3f} ms | "
                       f"{fx['span_ms_per_test'][v]:.3f} ms | {ph['setup']:.3f} ms | "
                       f"{ph['call']:.3f} ms | {ph['teardown']:.3f} ms |")
        if "lifecycle" in res:
            lc = res["lifecycle"]
            out.append(f"| `EchoServer` start() + stop(), in process | "
                       f"{lc['start_stop_ms']['median']:.3f} ms | | | | |")
            out.append(f"| `stop()` with 100 idle clients, in process | "
                       f"{lc['stop_100_clients_ms']['median']:.3f} ms | | | | |")
        out.append("")
    if "suite" in res:
        s = res["suite"]
        out.append(f"`multiconn suite` against our server (fresh process each run, start-up "
                   f"included): median **{s['wall_s']['median']:.2f} s** of "
                   f"{s['wall_s']['n']} runs.")
        out.append("")
    if "proxy" in res and "summary" in res["proxy"]:
        p = res["proxy"]
        out.append(f"redis-benchmark (`{p['command']}`) in front of one redis-server, through "
                   f"each relay, same run, median of {p['summary']['ours']['overall']['n']} "
                   "rotated rounds (req/s, all four tests together; relay CPU per request; "
                   f"{'pinned' if p.get('pinned') else 'nothing pinned'}).")
        out.append("")
        out += ["| | direct | ours (`multiconn proxy`) | socat | asyncio relay |",
                "|---|---|---|---|---|"]
        out.append("| requests/s | " + " | ".join(
            fmt(p["summary"][k]["overall"]["median"]) for k in proxy.RELAYS) + " |")
        out.append("| relay CPU per request (us) | - | " + " | ".join(
            f"{p['summary'][k]['relay_cpu_us_per_req']['median']:.1f}"
            for k in proxy.RELAYS[1:]) + " |")
        out.append("| ours / this | " + " | ".join(
            f"{p['ratios'][k]:.2f}x" if k in p["ratios"] else ("-" if k == "ours" else "n/a")
            for k in proxy.RELAYS) + " |")
        out.append("")
    return "\n".join(out)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10,
                               check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{out}{' + local changes' if dirty else ''}" if out else "unknown"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0912 - one block per section, on purpose
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a few minutes)")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"from {','.join(ALL_SERVERS)}")
    parser.add_argument("--workloads", default=",".join(echo.DEFAULT_WORKLOADS))
    parser.add_argument("--skip", default="", help=f"sections to skip, from {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        parser.error(f"--skip: unknown sections {sorted(skip - set(SECTIONS))}")
    t0 = time.monotonic()
    servers, notes = available_servers(args.servers.split(","))
    cfg = echo.Config(args.quick)
    given = sys.argv[1:] if argv is None else list(argv)
    if os.environ.get("MAKELEVEL") and argv is None:  # started by `make bench` / `bench-quick`
        extra = [a for a in given if a != "--quick"]
        command = f"make bench{'-quick' if args.quick else ''}" + (
            f" BENCH_ARGS={shlex.quote(shlex.join(extra))}" if extra else "")
    else:
        command = "python benchmarks/run_all.py " + shlex.join(given)
    meta = {"machine": machine_note(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _git_commit(), "command": command.strip(), "load_start": _load()}
    print(f"machine: {meta['machine']}; load average {meta['load_start']}")
    if os.getloadavg()[0] > QUIET_LOAD:
        print(f"WARNING: the machine is not quiet (1-minute load average above {QUIET_LOAD}): "
              "these figures are not for publishing")
    print(f"mode: {'quick' if args.quick else 'full'}; {cfg.rounds} interleaved rounds per warm "
          "echo workload; servers primed before anything is timed")
    for note in notes:
        print(f"note: {note}")
    res: dict[str, Any] = {"meta": meta, "machine": meta["machine"], "quick": args.quick,
                           "servers": servers, "notes": notes, "rounds": cfg.rounds}
    suffix = "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="multiconn-lat-") as latdir:
        if "echo" not in skip:
            print("\necho workloads")
            res["workloads"] = echo.run_workloads(servers, args.workloads.split(","), cfg,
                                                  Path(latdir))
            for wl in ("pp1", "pp100"):
                if wl in res["workloads"]:
                    res["workloads"][wl]["latency_us"] = {
                        k: percentiles(res["workloads"], wl, k) for k in servers}
            plot_note = plot_latency(res["workloads"], servers,
                                     args.out / f"latency{suffix}.png")
            if plot_note:
                res["notes"].append(plot_note)
            for r in res["workloads"].values():  # the sample files go with latdir
                for runs in r["runs"].values():
                    for run in runs:
                        run.pop("latency_file", None)
    if "lifecycle" not in skip:
        print("\nserver life cycle")
        res["lifecycle"] = lifecycle.run(args.quick)
    if "fixture" not in skip:
        print("\nfixture, wall time per test")
        res["fixture"] = fixture.run(200 if args.quick else 500, 3, 0 if args.quick else 20)
    if "suite" not in skip:
        print("\nfault-injection suite")
        res["suite"] = suite.run(3 if args.quick else 5)
    if "proxy" not in skip:
        print("\nproxy: redis-benchmark through each relay")
        res["proxy"] = proxy.run_redis(3 if args.quick else 5, 20_000 if args.quick else 100_000)
    meta["load_end"] = _load()

    # Report.
    if "workloads" in res:
        echo.print_report(res["workloads"], servers)
        for wl in ("pp1", "pp100"):
            for kind, pct in res["workloads"].get(wl, {}).get("latency_us", {}).items():
                if pct:
                    print(f"  {wl} {kind:9} latency " + ", ".join(
                        f"{k} {v:.0f} µs" for k, v in pct.items()))
    if "lifecycle" in res:
        lifecycle.print_report(res["lifecycle"])
    if "fixture" in res:
        fixture.print_report(res["fixture"])
    if "suite" in res:
        suite.print_report(res["suite"])
    if "proxy" in res:
        proxy.print_redis(res["proxy"])
    rows = targets(res)
    res["targets"] = [{"target": t, "required": r, "measured": m, "met": ok}
                      for t, r, m, ok in rows]
    print("\ntargets")
    for t, r, m, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        print(f"  {verdict:4} {t:56} {r:>12} {m:>12}")
    res["elapsed_s"] = time.monotonic() - t0
    md = markdown(res, servers)
    table = args.out / f"README-table{suffix}.md"
    table.write_text(md + "\n")
    data = args.out / ("quick.json" if args.quick else "latest.json")
    data.write_text(json.dumps(res, indent=1, default=str))
    print(f"\nload average at the end: {meta['load_end']}")
    print(f"wrote {data}, {table}, {args.out / f'latency{suffix}.png'} "
          f"({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
