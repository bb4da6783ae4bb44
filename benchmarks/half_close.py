"""How each real panel server ends a half-close, run after run: the truth harness's
``half_close_loss`` (tests/panel_truth.py), repeated, one line per run.

    .venv/bin/python benchmarks/half_close.py [--runs N] [--servers hypercorn,ncat-cat,...]
                                              [--read-while-sending]

Whether a server that can lose replies does lose them in one run can be a race the load
decides (hypercorn: a reset at its 1,000-request limit when pipelined requests are still
unread, a clean close when it had read them all), which is why the panel's truth repeats it
(``panel_truth.half_close_worst``).  Run it beside a CPU burner (``while :; do :; done``) to see
the loaded case.  Prints, per server, how many runs lost and how they ended.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from panel_truth import half_close_loss  # noqa: E402
from pytest_multiconn.cli.argtypes import positive_int  # noqa: E402
from realservers import SERVERS, missing, running  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=positive_int, default=3, help="runs per server (default 3)")
    parser.add_argument("--servers", default="", help="comma-separated names (default all)")
    parser.add_argument("--read-while-sending", action="store_true",
                        help="read the replies while the requests go out (a relay's test)")
    args = parser.parse_args(argv)
    names = [n for n in args.servers.split(",") if n] or sorted(SERVERS)
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"--servers: no panel server named {', '.join(unknown)} "
                     f"(known: {', '.join(sorted(SERVERS))})")
    for name in names:
        reason = missing(name)
        if reason:
            print(f"{name}: skipped ({reason})")
            continue
        endings: Counter[str] = Counter()
        losses = 0
        with tempfile.TemporaryDirectory() as tmp, running(name, Path(tmp)) as server:
            for run in range(1, args.runs + 1):
                result = half_close_loss(server, read_while_sending=args.read_while_sending)
                losses += result.loses
                endings[result.ending.split(" (")[0]] += 1
                print(f"  {name} run {run}: {'LOSES' if result.loses else 'no loss'}: "
                      f"{result.summary()}", flush=True)
        ends = ", ".join(f"{e} {n}" for e, n in endings.items())
        print(f"{name}: lost in {losses} of {args.runs} runs (ended by {ends})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
