"""Where an echo server's CPU goes under ping-pong 100 x 1 KiB (or streaming): three views.

    python benchmarks/profile_echo.py split [--stream] [--rounds N]
    python benchmarks/profile_echo.py pyspy [--stream] [--seconds S]
    python benchmarks/profile_echo.py cprofile [--stream] [--seconds S]

* ``split``: user and system CPU per operation (``/proc/PID/stat`` utime / stime over one load
  generator run) for ours, asyncio and uvloop, primed and warm, rotated rounds.  Kernel time is
  what the three share (the same recv / send / epoll calls); the user-space difference is the
  cost of the server's own code.
* ``pyspy``: py-spy samples of our server's loop thread (``py-spy record --nonblocking``, the
  bench extra installs it; needs ptrace permission), aggregated by line: time in ``send``,
  ``recv``, ``epoll.poll`` (C calls and the kernel below them) against Python bookkeeping.
* ``cprofile``: cProfile of the loop thread (``servers.py --profile``): calls per event and
  self time per function (cProfile's overhead inflates the Python share; read the call counts).
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLK_TCK,
    DEFAULT_SERVERS,
    HERE,
    PYTHON,
    ROOT,
    ServerProc,
    _readline,
    available_servers,
    build_loadgen,
    pin,
    start_loadgen,
)


def _args(stream: bool, seconds: float, pid: int | None = None) -> tuple[str, list[str]]:
    base = ["-c", "10", "-W", "65536"] if stream else ["-c", "100", "-s", "1024"]
    base += ["-d", str(seconds), "-w", "0.5"]
    if pid is not None:
        base += ["-p", str(pid)]
    return ("stream" if stream else "pingpong"), base


def _ops(run: dict[str, Any], stream: bool) -> float:
    return run["bytes"] / 1e6 if stream else float(run["round_trips"])


def _ut_st(pid: int) -> tuple[float, float]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    f = stat[stat.rindex(")") + 2 :].split()
    return int(f[11]) / CLK_TCK, int(f[12]) / CLK_TCK


def split(stream: bool, rounds: int) -> None:
    exe = build_loadgen()
    kinds, notes = available_servers(DEFAULT_SERVERS)
    for note in notes:
        print(f"note: {note}")
    unit = "us/MB" if stream else "us/round trip"
    procs: dict[str, ServerProc] = {}
    res: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    try:
        for k in kinds:
            procs[k] = ServerProc(k)
            procs[k].prime()
        for r in range(rounds):
            for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                p = procs[k]
                u0, s0 = _ut_st(p.pid)
                mode, args = _args(stream, 3.0, p.pid)
                run = start_loadgen(exe, mode, p.port, args, timeout=40).result()
                u1, s1 = _ut_st(p.pid)
                # utime/stime cover the whole run (warm-up included), so compare their shares;
                # the schedstat figure covers the measured window only.
                whole = (u1 - u0) + (s1 - s0)
                window = run["server_cpu_s"] / _ops(run, stream) * 1e6
                res[k].append(((u1 - u0) / whole if whole else 0.0, window,
                               run["per_sec"] if not stream else run["mb_per_sec"]))
    finally:
        for p in procs.values():
            p.close()
    print(f"server CPU per operation ({unit}, measured window) and its user-space share")
    for k, v in res.items():
        share = statistics.median(x[0] for x in v)
        cpu = statistics.median(x[1] for x in v)
        print(f"  {k:8} {cpu:8.2f} {unit}: user {share * cpu:7.2f} ({share:.0%}), "
              f"kernel {(1 - share) * cpu:7.2f}")


def pyspy(stream: bool, seconds: float) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed (pip install -e '.[bench]')")
    exe = build_loadgen()
    with tempfile.TemporaryDirectory(prefix="multiconn-pyspy-") as tmp, ServerProc("ours") as s:
        s.prime()
        mode, args = _args(stream, seconds + 2, None)
        lg = start_loadgen(exe, mode, s.port, args, timeout=seconds + 40)
        time.sleep(1.0)
        raw = Path(tmp) / "ours.raw"
        subprocess.run([spy, "record", "-p", str(s.pid), "-r", "500", "-d",
                        str(max(1, round(seconds))), "-f", "raw", "-o", str(raw),
                        "--nonblocking"], check=True, capture_output=True, timeout=seconds + 60)
        lg.result()
        leaf: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            if not any("Loop._run" in f for f in frames):
                continue
            total += int(n)
            leaf[frames[-1]] += int(n)
    print(f"py-spy, our loop thread, {total} samples; by line (C calls include the kernel "
          "below them):")
    for frame, n in leaf.most_common(8):
        print(f"  {n / total:6.1%}  {frame}")


def cprofile(stream: bool, seconds: float) -> None:
    exe = build_loadgen()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with tempfile.TemporaryDirectory(prefix="multiconn-cprofile-") as tmp:
        out = Path(tmp) / "ours.prof"
        proc = subprocess.Popen([PYTHON, str(HERE / "servers.py"), "--kind", "ours", "--profile",
                                 str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=env)
        try:
            assert proc.stdout is not None
            port = int(_readline(proc.stdout, 20, "server did not report its port").split()[1])
            pin(proc.pid, 0)
            mode, args = _args(stream, seconds, proc.pid)
            run = start_loadgen(exe, mode, port, args, timeout=seconds + 40).result()
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(20)
        st = pstats.Stats(str(out))
        ops = _ops(run, stream)
        print(f"cProfile, our loop thread ({ops:,.0f} {'MB' if stream else 'round trips'}); "
              "self time and calls per operation:")
        rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:10]  # type: ignore[attr-defined]
        total = st.total_tt  # type: ignore[attr-defined]
        for (file, line, name), (_cc, nc, tt, _ct, _callers) in rows:
            print(f"  {tt / total:6.1%}  {nc / ops:8.2f}/op  {Path(file).name}:{line} {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("view", choices=["split", "pyspy", "cprofile"])
    parser.add_argument("--stream", action="store_true", help="streaming 10 x 64 KiB instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.view == "split":
        split(args.stream, args.rounds)
    elif args.view == "pyspy":
        pyspy(args.stream, args.seconds)
    else:
        cprofile(args.stream, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
