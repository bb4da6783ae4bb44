"""Run the whole benchmark suite (what ``make bench`` runs) and check the project's targets.

    python benchmarks/run_all.py [--quick] [--servers ...] [--skip-fixture] [--skip-scale]

In one invocation: the echo workloads against every baseline (benchmarks/echo.py), the server
life cycle (benchmarks/lifecycle.py), the per-test fixture overhead (benchmarks/fixture.py),
then a table of targets with PASS/MISS.  Writes benchmarks/results/latest.json (raw numbers),
benchmarks/results/latest.md (the README table) and benchmarks/results/latency.png (round-trip
latency distributions per server, from the load generator's own samples).  ``--quick`` takes
about two minutes; the full run about eight.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import echo
import fixture
import lifecycle
from _common import ALL_SERVERS, RESULTS, available_servers, fmt, machine_note, summary, tempdir

MIB = 1024 * 1024


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
    fig.suptitle("Echo round-trip latency, same C load generator for every server", fontsize=11)
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


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, required, measured, met) rows; met is None where it could not be measured."""
    rows: list[tuple[str, str, str, bool | None]] = []
    wl = res.get("workloads", {})

    def ratio(name: str, base: str) -> float | None:
        if name not in wl:
            return None
        return echo.ratios(wl, name).get(base)

    for name, label in (("pp100", "ping-pong 100 x 1 KiB"), ("stream10", "streaming 10 x 64 KiB")):
        for base, need in (("uvloop", 1.0), ("asyncio", 1.2)):
            r = ratio(name, base)
            rows.append((f"{label} vs {base}", f">= {need:.1f}x",
                         "n/a" if r is None else f"{r:.2f}x", None if r is None else r >= need))
    if "idle10k" in wl and "ours" in wl["idle10k"]["runs"]:
        runs = wl["idle10k"]["runs"]["ours"]
        n = runs[0]["conns"] if runs else 0
        mem = summary([r["bytes_per_conn"] for r in runs])["median"]
        rows.append((f"memory per idle connection ({n:,} conns)", "<= 2048 B", f"{fmt(mem)} B",
                     mem <= 2048))
        r = ratio("idle10k", "asyncio")
        rows.append((f"accept rate vs asyncio ({n:,} conns)", ">= 1.0x",
                     "n/a" if r is None else f"{r:.2f}x", None if r is None else r >= 1.0))
    if "push" in wl and wl["push"]["summary"].get("ours", {}).get("n"):
        growth = wl["push"]["summary"]["ours"]["median"]
        limit = echo.HIGH_WATER + MIB
        rows.append(("never-reading client: memory growth", f"<= {fmt(limit / 1024)} KiB",
                     f"{fmt(growth / 1024)} KiB", growth <= limit))
    if "idlecpu" in wl and wl["idlecpu"]["summary"].get("ours", {}).get("n"):
        cpu = wl["idlecpu"]["summary"]["ours"]["median"]
        rows.append(("idle CPU, 100 idle connections", "about 0%", f"{cpu:.1f}%", cpu < 1.0))
    if "fixture" in res:
        fx = res["fixture"]["overhead_ms"]
        rows.append(("function-scoped multiconn_server per test", "<= 0.5 ms",
                     f"{fx['server']:.3f} ms", fx["server"] <= 0.5))
        rows.append(("... with one client exchange", "(no target)", f"{fx['exchange']:.3f} ms",
                     None))
        if "httpserver" in fx:
            rows.append(("function-scoped pytest-httpserver per test", "(baseline)",
                         f"{fx['httpserver']:.1f} ms", None))
    if "lifecycle" in res:
        stop = res["lifecycle"]["stop_100_clients_ms"]["median"]
        rows.append(("stop() with 100 idle clients", "<= 20 ms", f"{stop:.2f} ms", stop <= 20))
        ss = res["lifecycle"]["start_stop_ms"]["median"]
        rows.append(("start() + stop(), in process", "<= 2 ms", f"{ss:.3f} ms", ss <= 2))
    return rows


def markdown(res: dict[str, Any], servers: list[str]) -> str:
    wl = res["workloads"]
    out = ["| workload | " + " | ".join(servers) + " | ours vs " + ", ".join(
        s for s in servers if s != "ours") + " |", "|" + "---|" * (len(servers) + 2)]
    for name, r in wl.items():
        scale = 1 / MIB if name == "push" else 1.0
        unit = r["unit"]
        cells = []
        for kind in servers:
            s = r["summary"].get(kind)
            if not s or not s["n"]:
                cells.append("n/a")
                continue
            cell = f"{fmt(s['median'] * scale)}"
            if s["n"] > 1:
                cell += f" ({fmt(s['min'] * scale)} to {fmt(s['max'] * scale)})"
            if name == "idle10k":
                mem = summary([x["bytes_per_conn"] for x in r["runs"][kind]])["median"]
                cell += f"; {fmt(mem)} B/conn"
                if not all(x["complete"] for x in r["runs"][kind]):
                    cell += " (timed out)"
            cells.append(cell)
        rat = echo.ratios(wl, name)
        ratio_cell = ", ".join(
            f"{rat[k]:.2f}x" if rat.get(k) not in (None, float("inf")) else "—"
            for k in servers if k != "ours")
        if name in ("idlecpu", "push"):
            ratio_cell = "(absolute figures)"
        title = r["title"]
        if name == "idle10k":
            n = next(iter(r["runs"].values()))[0]["conns"] if any(r["runs"].values()) else 0
            title = f"{n:,} idle connections: accept rate; memory"
        out.append(f"| {title} ({unit}) | " + " | ".join(cells) + f" | {ratio_cell} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 2 minutes)")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS))
    parser.add_argument("--workloads", default=",".join(echo.WORKLOADS))
    parser.add_argument("--skip-fixture", action="store_true")
    parser.add_argument("--skip-lifecycle", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    servers, notes = available_servers(args.servers.split(","))
    cfg = echo.Config(args.quick)
    print(f"machine: {machine_note()}")
    print(f"mode: {'quick' if args.quick else 'full'}; {cfg.repeat} repetitions per "
          f"(workload, server), interleaved across servers; medians compared")
    for note in notes:
        print(f"note: {note}")
    res: dict[str, Any] = {"machine": machine_note(), "quick": args.quick, "servers": servers,
                           "notes": notes}
    print("\necho workloads")
    res["workloads"] = echo.run_workloads(servers, args.workloads.split(","), cfg,
                                          tempdir("multiconn-lat-"))
    if not args.skip_lifecycle:
        print("\nserver life cycle")
        res["lifecycle"] = lifecycle.run(args.quick)
    if not args.skip_fixture:
        print("\nfixture overhead")
        res["fixture"] = fixture.run(200 if args.quick else 500, 10 if args.quick else 40,
                                     1 if args.quick else 2)
    # Report.
    echo.print_report(res["workloads"], servers)
    for wl in ("pp1", "pp100"):
        if wl in res["workloads"]:
            for kind in servers:
                pct = percentiles(res["workloads"], wl, kind)
                res["workloads"][wl].setdefault("latency_us", {})[kind] = pct
                if pct:
                    print(f"  {wl} {kind:9} latency " + ", ".join(
                        f"{k} {v:.0f} µs" for k, v in pct.items()))
    if "lifecycle" in res:
        lifecycle.print_report(res["lifecycle"])
    if "fixture" in res:
        fixture.print_report(res["fixture"])
    args.out.mkdir(parents=True, exist_ok=True)
    plot_note = plot_latency(res["workloads"], servers, args.out / "latency.png")
    if plot_note:
        print(f"note: {plot_note}")
        res["notes"].append(plot_note)
    rows = targets(res)
    res["targets"] = [{"target": t, "required": r, "measured": m, "met": ok}
                      for t, r, m, ok in rows]
    print("\ntargets")
    for t, r, m, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        print(f"  {verdict:4} {t:48} {r:>12} {m:>12}")
    md = markdown(res, servers)
    (args.out / "latest.md").write_text(md + "\n")
    res["elapsed_s"] = time.monotonic() - t0
    (args.out / "latest.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"\nwrote {args.out / 'latest.json'}, {args.out / 'latest.md'}, "
          f"{args.out / 'latency.png'} ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
