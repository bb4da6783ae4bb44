"""FaultProxy overhead: the echo server direct against the same server through the proxy.

    python benchmarks/proxy.py [--quick] [--repeat N] [--duration S]

One echo server process (our EchoServer, benchmarks/servers.py, pinned to CPU 0), one proxy
process (``python -m pytest_multiconn.cli.proxy``, the ``multiconn proxy`` command, pinned to
CPU 1) and the C load generator (benchmarks/loadgen.c, pinned to CPU 1: it is cheap, and it
reports its own CPU use; a run where it used more than 90% of its core is flagged
``client-bound``, because then the figure says more about the client than about the server).
Direct and proxied runs alternate, each repeated; we print min/median/max and the ratios of
the medians:

  stream10   no faults, 10 connections, 64 KiB in flight each: proxied MB/s / direct MB/s
             (target: >= 0.5)
  pp1        no faults, 1 connection, 64 B ping-pong: added median round-trip time
             (target: <= 100 us)
  latency50  Latency(ms=50) downstream, 1 connection, 64 B ping-pong: added p50 round trip
             (target: 50-60 ms)
"""

from __future__ import annotations

import argparse
import array
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    ROOT,
    SATURATED,
    ServerProc,
    _readline,
    build_loadgen,
    cpu_seconds,
    machine_note,
    pin,
    start_loadgen,
    summary,
)


class ProxyProc:
    """``multiconn proxy`` in its own process, in front of ``target_port``."""

    def __init__(self, target_port: int, faults: list[str], pin_cpu: int | None = 1) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        cmd = [PYTHON, "-m", "pytest_multiconn.cli.proxy", "127.0.0.1", "0", "127.0.0.1",
               str(target_port), "--seed", "1", "--duration", "3600"]
        for fault in faults:
            cmd += ["--fault", fault]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, 20, "proxy did not report its port").decode()
        if not line.startswith("proxy listening on 127.0.0.1:"):
            self.close()
            raise RuntimeError(f"proxy said {line!r}")
        self.port = int(line.split()[3].rsplit(":", 1)[1])
        self.pid = self.proc.pid
        if pin_cpu is not None:
            pin(self.pid, pin_cpu)

    def __enter__(self) -> ProxyProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        elif self.proc.stdout is not None:
            self.proc.stdout.close()


def _stream(exe: Path, port: int, duration: float) -> dict[str, Any]:
    args = ["-c", "10", "-W", "65536", "-d", str(duration), "-w", "0.3"]
    run = start_loadgen(exe, "stream", port, args, timeout=duration + 30).result()
    if run["errors"] or run["mismatches"]:
        raise RuntimeError(f"stream: {run['errors']} errors, {run['mismatches']} mismatches")
    return run


def _pingpong(exe: Path, port: int, duration: float, tmp: Path) -> dict[str, Any]:
    latfile = tmp / f"rtt-{port}-{time.monotonic_ns()}.f32"
    args = ["-c", "1", "-s", "64", "-d", str(duration), "-w", "0.2", "-l", str(latfile)]
    run = start_loadgen(exe, "pingpong", port, args, timeout=duration + 30).result()
    if run["errors"] or run["mismatches"]:
        raise RuntimeError(f"pingpong: {run['errors']} errors, {run['mismatches']} mismatches")
    samples = array.array("f")
    samples.frombytes(latfile.read_bytes())
    latfile.unlink()
    run["p50_us"] = statistics.median(samples) if samples else float("nan")
    return run


def _line(name: str, values: list[float], unit: str, bound: bool) -> str:
    s = summary(values)
    flag = "  client-bound" if bound else ""
    return (f"  {name:<22} min {s['min']:10.2f}  median {s['median']:10.2f}  "
            f"max {s['max']:10.2f} {unit}{flag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 1 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.duration = 3, 1.0
    exe = build_loadgen()
    print(f"FaultProxy benchmark: {machine_note()}")
    print(f"{args.repeat} repetitions of {args.duration}s, direct and proxied alternating\n")
    res: dict[str, list[float]] = {k: [] for k in (
        "stream_direct", "stream_proxy", "pp_direct", "pp_proxy", "lat_direct", "lat_proxy")}
    bound: dict[str, bool] = dict.fromkeys(res, False)
    cpu: dict[str, list[float]] = {"echo": [], "proxy": []}
    with tempfile.TemporaryDirectory(prefix="multiconn-proxy-bench-") as tmpdir, \
            ServerProc("ours", pin_cpu=0) as echo, \
            ProxyProc(echo.port, []) as plain, \
            ProxyProc(echo.port, ["latency:ms=50,direction=downstream"]) as slow:
        tmp = Path(tmpdir)
        for _ in range(args.repeat):
            for key, port in (("stream_direct", echo.port), ("stream_proxy", plain.port)):
                c_echo, c_proxy = cpu_seconds(echo.pid), cpu_seconds(plain.pid)
                t0 = time.monotonic()
                run = _stream(exe, port, args.duration)
                res[key].append(run["mb_per_sec"])
                bound[key] |= run["client_cpu"] > SATURATED
                if key == "stream_proxy":
                    wall = time.monotonic() - t0
                    cpu["echo"].append((cpu_seconds(echo.pid) - c_echo) / wall)
                    cpu["proxy"].append((cpu_seconds(plain.pid) - c_proxy) / wall)
            for key, port in (("pp_direct", echo.port), ("pp_proxy", plain.port)):
                run = _pingpong(exe, port, args.duration, tmp)
                res[key].append(run["p50_us"])
                bound[key] |= run["client_cpu"] > SATURATED
            for key, port in (("lat_direct", echo.port), ("lat_proxy", slow.port)):
                run = _pingpong(exe, port, max(1.0, args.duration / 2), tmp)
                res[key].append(run["p50_us"])
                bound[key] |= run["client_cpu"] > SATURATED

    med = {k: statistics.median(v) for k, v in res.items()}
    print("stream10: 10 connections, 64 KiB in flight each (MB/s echoed)")
    print(_line("direct", res["stream_direct"], "MB/s", bound["stream_direct"]))
    print(_line("through proxy", res["stream_proxy"], "MB/s", bound["stream_proxy"]))
    print(f"  proxy CPU {statistics.median(cpu['proxy']):.0%} of a core, echo server "
          f"{statistics.median(cpu['echo']):.0%} (while proxied)")
    print("pp1: 1 connection, 64 B ping-pong (median round trip, us)")
    print(_line("direct", res["pp_direct"], "us", bound["pp_direct"]))
    print(_line("through proxy", res["pp_proxy"], "us", bound["pp_proxy"]))
    print("latency50: Latency(ms=50) downstream, 64 B ping-pong (median round trip, us)")
    print(_line("direct", res["lat_direct"], "us", bound["lat_direct"]))
    print(_line("through proxy", res["lat_proxy"], "us", bound["lat_proxy"]))

    throughput = med["stream_proxy"] / med["stream_direct"]
    added_us = med["pp_proxy"] - med["pp_direct"]
    added_ms = (med["lat_proxy"] - med["lat_direct"]) / 1e3
    print("\nratios of medians")
    print(f"  stream10 throughput, proxied / direct: {throughput:.2f}  "
          f"(target >= 0.50: {'ok' if throughput >= 0.5 else 'MISSED'})")
    print(f"  pp1 added median latency:              {added_us:.0f} us  "
          f"(target <= 100 us: {'ok' if added_us <= 100 else 'MISSED'})")
    print(f"  latency50 added p50:                   {added_ms:.1f} ms  "
          f"(target 50-60 ms: {'ok' if 50 <= added_ms <= 60 else 'MISSED'})")
    if any(bound.values()):
        print("  note: the load generator was near saturation in the runs marked client-bound")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
