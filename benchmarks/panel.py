"""The fault-injection suite against the panel of real servers (tests/realservers.py), beside
their measured truth (tests/panel_truth.py): one Markdown table, printed and written to
benchmarks/results/panel.md with the command that reproduces it.

    .venv/bin/python benchmarks/panel.py [--seeds N] [--servers nginx,redis,...] [--out PATH]

Each server is started, its truth measured once, then the suite runs with seeds 1..N.  A
cell is the row's result (pass/FAIL/note/n/a); when seeds disagree, every result seen is
shown with its count (``pass 4, FAIL 1``); ``!`` marks a cell that disagrees with the truth
(tests/test_panel.py asserts there is none).  "seconds" is the slowest run (target 10 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from panel_suite import disagreement, disagreements, exchange_for, measure_truth, run_suite  # noqa: E402
from pytest_multiconn.suite.checks import CHECK_NAMES  # noqa: E402
from realservers import SERVERS, missing, running  # noqa: E402

OUT = HERE / "results" / "panel.md"


def _cell(results: list[str], bad: bool) -> str:
    counts = Counter(results)
    text = results[0] if len(counts) == 1 else ", ".join(f"{r} {n}" for r, n in counts.items())
    return text + (" !" if bad else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds 1..N (default 1)")
    parser.add_argument("--servers", default="", help="comma-separated names (default all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    names = [n for n in args.servers.split(",") if n] or sorted(SERVERS)
    seeds = list(range(1, args.seeds + 1))
    command = "python benchmarks/panel.py" + (f" --seeds {args.seeds}" if args.seeds != 1 else "")
    if args.servers:
        command += f" --servers {args.servers}"
    head = ["server", "protocol", *CHECK_NAMES, "seconds", "truth"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    problems: list[str] = []
    skipped: list[str] = []
    started = time.monotonic()
    for name in names:
        reason = missing(name)
        if reason:
            skipped.append(reason)
            continue
        # The truth on one process, each seed on a freshly started one (tests/test_panel.py
        # says why: memory freed after a flood is reused without growing).
        with tempfile.TemporaryDirectory() as tmp:
            with running(name, Path(tmp) / "truth") as server:
                truth = measure_truth(server)
            exchange, _ = exchange_for(server.protocol)
            per_row: dict[str, list[str]] = {n: [] for n in CHECK_NAMES}
            bad_rows: set[str] = set()
            slowest = 0.0
            for seed in seeds:
                with running(name, Path(tmp) / f"seed-{seed}") as server:
                    report = run_suite(server, seed)
                slowest = max(slowest, report.seconds)
                problems += disagreements(report, truth, exchange)
                for row in report.rows:
                    per_row.setdefault(row.fault, []).append(row.result)
                    if disagreement(row, truth, exchange) is not None:
                        bad_rows.add(row.fault)
        cells = [_cell(per_row[n], n in bad_rows) if per_row[n] else "-" for n in CHECK_NAMES]
        line = f"| {name} | {server.protocol} | " + " | ".join(cells)
        line += f" | {slowest:.1f} | {truth.summary()} |"
        lines.append(line)
        print(line, flush=True)
    took = time.monotonic() - started
    text = [
        "# The suite against the real-server panel",
        "",
        f"Reproduce: `{command}` (tests/test_panel.py asserts agreement over seeds 1..5).",
        "",
        f"Seeds {seeds[0]}..{seeds[-1]}; cells: the row's result (counts when seeds differ; "
        "`!` = disagrees with the truth); seconds: the slowest suite run (target 10 s); "
        "truth: tests/panel_truth.py measured on the same server.",
        "",
        *lines,
        "",
    ]
    if skipped:
        text += ["Skipped:", "", *[f"- {s}" for s in skipped], ""]
    text += ["Disagreements with the truth: " + ("none" if not problems else str(len(problems))),
             "", *[f"- {p}" for p in problems], "",
             f"Whole panel: {took:.0f} s on {_machine()}.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print("\n".join(text[len(lines) + 7:]))
    print(f"written to {args.out}")
    return 1 if problems else 0


def _machine() -> str:
    import os
    import platform

    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, load {load}"


if __name__ == "__main__":
    raise SystemExit(main())
