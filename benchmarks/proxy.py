"""FaultProxy against the relays a user would pick instead, and its overhead on the echo server.

    python benchmarks/proxy.py [--quick] [--rounds N] [--workloads redis,echo]

**redis** (the headline): redis-benchmark through each relay in front of one real redis-server,
same load, same run: ``redis-benchmark -c 50 -n N -t ping,set,get`` (4 tests: PING_INLINE,
PING_MBULK, SET, GET), against

  direct     redis-server itself (the ceiling)
  ours       ``multiconn proxy`` (``python -m pytest_multiconn.cli.proxy``), no faults
  socat      ``socat TCP-LISTEN:PORT,bind=127.0.0.1,fork,reuseaddr,backlog=1024
             TCP:127.0.0.1:REDIS`` (socat's default listen backlog is 5: 50 clients connecting at
             once then lose SYNs and wait out TCP's 1 s + 2 s retransmission timers, which
             measures the timer, not the relay; the other relays listen with 1024 too)
  asyncio    a plain asyncio relay (``start_server`` + ``open_connection``, read / write / drain
             both ways, EOF forwarded), this file's ``--serve-asyncio-relay``

Nothing is pinned by default: the relays run where the scheduler puts them, as a user's
would (socat's one process per connection is penalised when all of them share one CPU).
``--pin`` puts redis-server on CPU 0 and the relay and redis-benchmark on CPU 1 instead.  Either
way each relay's CPU per request is reported, the steadiest figure on a shared machine.  Every
process runs on an ephemeral loopback port and is started
and stopped here; every wait is bounded.  Each relay is primed first (one connection that sends
PING, half-closes and waits for the close) and all stay up for the whole run; the rounds rotate
the order.  Printed: requests/s per test and overall (total requests / total time), the median
over rounds, ours / each peer as the median of per-round ratios, and each relay's CPU per
request (its process plus, for socat, its reaped per-connection children).

**echo** (the proxy's overhead, our EchoServer direct against through ``multiconn proxy``):
stream10 throughput ratio, pp1 added median round trip, and ``Latency(ms=50)`` downstream.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLK_TCK,
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
    wait_until,
)

RELAYS = ("direct", "ours", "socat", "asyncio")


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port that was free a moment ago (for programs that cannot report port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def total_cpu(pid: int) -> float:
    """utime + stime of a process and of its reaped children (socat forks one per connection)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    f = stat[stat.rindex(")") + 2 :].split()
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK_TCK


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


class Proc:
    """A child process on a loopback port: started, waited for (bounded), stopped in ``close``."""

    def __init__(self, name: str, cmd: Sequence[str], *, port: int | None, cpu: int | None,
                 timeout: float = 20.0, stdout: Any = subprocess.DEVNULL,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=stdout,
                                     stderr=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid
        try:
            if port is not None:
                self.port = port
                wait_until(lambda: self.proc.poll() is not None or port_open(port), timeout,
                           f"{name} to listen on 127.0.0.1:{port}")
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {self.proc.returncode}")
            if cpu is not None:
                pin(self.pid, cpu)
        except BaseException:
            self.close()
            raise

    def cpu(self) -> float:
        return total_cpu(self.pid)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every per-connection child has exited and been reaped (socat)."""
        wait_until(lambda: not children(self.pid), timeout, f"{self.name}'s children to exit")

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_on_free_port(name: str, make_cmd: Callable[[int], list[str]], **kw: Any) -> Proc:
    """Start a program that needs a port number given to it; retry if the port was taken."""
    last: Exception | None = None
    for _ in range(5):
        port = free_port()
        try:
            return Proc(name, make_cmd(port), port=port, **kw)
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(f"{name} did not start on a free port: {last}")


class OurProxy(Proc):
    def __init__(self, target: int, faults: Sequence[str] = (), cpu: int | None = 1) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        cmd = [PYTHON, "-m", "pytest_multiconn.cli.proxy", "127.0.0.1", "0", "127.0.0.1",
               str(target), "--seed", "1", "--duration", "3600"]
        for fault in faults:
            cmd += ["--fault", fault]
        super().__init__("multiconn proxy", cmd, port=None, cpu=None, stdout=subprocess.PIPE,
                         env=env)
        try:
            line = _readline(self.proc.stdout, 20, "proxy did not report its port").decode()
            if not line.startswith("proxy listening on 127.0.0.1:"):
                raise RuntimeError(f"proxy said {line!r}")
            self.port = int(line.split()[3].rsplit(":", 1)[1])
            if cpu is not None:
                pin(self.pid, cpu)
        except BaseException:
            self.close()
            raise


class AsyncioRelay(Proc):
    def __init__(self, target: int, cpu: int | None = 1) -> None:
        super().__init__("asyncio relay", [PYTHON, __file__, "--serve-asyncio-relay", str(target)],
                         port=None, cpu=None, stdout=subprocess.PIPE)
        try:
            line = _readline(self.proc.stdout, 20, "asyncio relay did not report its port")
            self.port = int(line.split()[1])
            if cpu is not None:
                pin(self.pid, cpu)
        except BaseException:
            self.close()
            raise


def serve_asyncio_relay(target: int) -> None:
    """The plain asyncio relay a user would write: read, write, drain, both ways."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(pipe(c_reader, s_writer), pipe(s_reader, c_writer))
        for w in (c_writer, s_writer):
            w.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_signal_handler(signal.SIGINT, lambda: done.done() or done.set_result(None))
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await done
        server.close()

    asyncio.run(main())


def prime_redis(port: int, timeout: float = 10.0) -> None:
    """One connection through the relay: PING, half-close, wait for the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        got = b""
        while not got.endswith(b"\r\n"):
            chunk = sock.recv(64)
            if not chunk:
                raise RuntimeError(f"port {port} closed before answering PING")
            got += chunk
        if got != b"+PONG\r\n":
            raise RuntimeError(f"port {port} answered PING with {got!r}")
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)


# -- the redis workload ---------------------------------------------------------------------------
def redis_benchmark(port: int, clients: int, requests: int, timeout: float,
                    cpu: int | None = None) -> dict[str, float]:
    """{test: requests/s} from one ``redis-benchmark --csv`` run, plus ``_total_s``."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n",
           str(requests), "-t", "ping,set,get", "--csv"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpu is not None:
        pin(proc.pid, cpu)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"redis-benchmark on port {port} did not finish in {timeout}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited {proc.returncode}: {err.strip()[-300:]}")
    rows = list(csv.reader(io.StringIO(out)))
    res = {row[0]: float(row[1]) for row in rows[1:] if len(row) > 1}
    if not res:
        raise RuntimeError(f"redis-benchmark printed no results: {out[-300:]!r}")
    # A request that took about a second or more waited for a lost SYN's retransmission.
    stalls = [row[0] for row in rows[1:] if len(row) > 7 and float(row[7]) >= 900]
    res["_stalled_tests"] = float(len(stalls))
    tests = [t for t in res if not t.startswith("_")]
    total_s = sum(requests / res[t] for t in tests)
    res["_requests"] = requests * len(tests)
    res["_total_s"] = total_s
    res["_overall"] = res["_requests"] / total_s
    return res


def run_redis(rounds: int, requests: int, clients: int = 50, *, pinned: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    for tool in ("redis-server", "redis-benchmark", "socat"):
        if shutil.which(tool) is None:
            return {"skipped": f"{tool} is not installed (apt-get install redis-server "
                               "redis-tools socat)"}
    per: dict[str, list[dict[str, float]]] = {k: [] for k in RELAYS}
    with tempfile.TemporaryDirectory(prefix="multiconn-redis-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        redis = stack.enter_context(start_on_free_port(
            "redis-server",
            lambda p: ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", tmp, "--logfile", ""],
            cpu=0 if pinned else None))
        relay_cpu = 1 if pinned else None
        relays: dict[str, Any] = {"direct": None}
        relays["ours"] = stack.enter_context(OurProxy(redis.port, cpu=relay_cpu))
        relays["socat"] = stack.enter_context(start_on_free_port(
            "socat",
            lambda p: ["socat", f"TCP-LISTEN:{p},bind=127.0.0.1,fork,reuseaddr,backlog=1024",
                       f"TCP:127.0.0.1:{redis.port}"],
            cpu=relay_cpu))
        relays["asyncio"] = stack.enter_context(AsyncioRelay(redis.port, cpu=relay_cpu))
        ports = {k: (redis.port if v is None else v.port) for k, v in relays.items()}
        for kind, port in ports.items():
            prime_redis(port)
            if kind == "socat":
                relays[kind].settle()
        log(f"  started redis-server :{redis.port}, multiconn proxy :{ports['ours']}, socat "
            f":{ports['socat']}, asyncio relay :{ports['asyncio']}; primed each")
        for r in range(rounds):
            k = r % len(RELAYS)
            for kind in (*RELAYS[k:], *RELAYS[:k]):
                relay = relays[kind]
                c0 = relay.cpu() if relay else 0.0
                r0 = redis.cpu()
                res = redis_benchmark(ports[kind], clients, requests, timeout=120,
                                      cpu=relay_cpu)
                if kind == "socat":
                    relay.settle()
                n = res["_requests"]
                res["relay_cpu_us_per_req"] = (relay.cpu() - c0) / n * 1e6 if relay else 0.0
                res["redis_cpu_us_per_req"] = (redis.cpu() - r0) / n * 1e6
                res["round"] = r
                per[kind].append(res)
                tests = {t: v for t, v in res.items() if not t.startswith("_") and t.isupper()}
                stall = " STALLED (a request took >= 0.9 s)" if res["_stalled_tests"] else ""
                log(f"  redis     {kind:8} round {r + 1}/{rounds}: {res['_overall']:,.0f} req/s "
                    f"({', '.join(f'{t} {v:,.0f}' for t, v in tests.items())}); relay CPU "
                    f"{res['relay_cpu_us_per_req']:.1f} us/req{stall}")
    out = summarise_redis(per, requests, clients)
    out["pinned"] = pinned
    return out


def summarise_redis(per: dict[str, list[dict[str, float]]], requests: int,
                    clients: int) -> dict[str, Any]:
    tests = sorted({t for runs in per.values() for run in runs for t in run
                    if not t.startswith("_") and t.isupper()})
    summ: dict[str, Any] = {}
    for kind, runs in per.items():
        summ[kind] = {
            "overall": summary([r["_overall"] for r in runs]),
            "tests": {t: summary([r[t] for r in runs if t in r]) for t in tests},
            "relay_cpu_us_per_req": summary([r["relay_cpu_us_per_req"] for r in runs]),
            "redis_cpu_us_per_req": summary([r["redis_cpu_us_per_req"] for r in runs]),
        }
    ours = {r["round"]: r["_overall"] for r in per["ours"]}
    ratios: dict[str, float] = {}
    for kind in ("direct", "socat", "asyncio"):
        paired = [ours[r["round"]] / r["_overall"] for r in per[kind] if r["round"] in ours]
        if paired:
            ratios[kind] = statistics.median(paired)
    best_peer = max(("socat", "asyncio"), key=lambda k: summ[k]["overall"]["median"])
    paired_best = []
    for r in per["ours"]:
        peers = [x["_overall"] for k in ("socat", "asyncio") for x in per[k]
                 if x["round"] == r["round"]]
        if len(peers) == 2:
            paired_best.append(r["_overall"] / max(peers))
    return {"runs": per, "summary": summ, "ratios": ratios, "tests": tests,
            "vs_best_peer": statistics.median(paired_best) if paired_best else float("nan"),
            "best_peer": best_peer, "requests": requests, "clients": clients,
            "command": f"redis-benchmark -h 127.0.0.1 -p PORT -c {clients} -n {requests} "
                       "-t ping,set,get --csv"}


def print_redis(res: dict[str, Any]) -> None:
    if "skipped" in res:
        print(f"\nproxy / redis: skipped: {res['skipped']}")
        return
    print(f"\nredis-benchmark through each relay ({res['command']}; req/s, median of "
          f"{res['summary']['ours']['overall']['n']} rounds; higher is better; "
          f"{'redis on CPU 0, relay and benchmark on CPU 1' if res.get('pinned') else 'unpinned'})")
    tests = res["tests"]
    print(f"  {'':8} {'overall':>9} " + " ".join(f"{t:>12}" for t in tests)
          + "  relay CPU/req  redis CPU/req")
    for kind in RELAYS:
        s = res["summary"][kind]
        print(f"  {kind:8} {s['overall']['median']:9,.0f} "
              + " ".join(f"{s['tests'][t]['median']:12,.0f}" for t in tests)
              + f"  {s['relay_cpu_us_per_req']['median']:10.1f} us"
              + f"  {s['redis_cpu_us_per_req']['median']:10.1f} us")
    print("  ours vs " + ", ".join(f"{k}: {v:.2f}x" for k, v in res["ratios"].items())
          + f"; vs the best peer each round: {res['vs_best_peer']:.2f}x  "
          "(medians of per-round ratios)")


# -- the echo overhead workload --------------------------------------------------------------
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


def run_echo(rounds: int, duration: float) -> dict[str, Any]:
    exe = build_loadgen()
    res: dict[str, list[float]] = {k: [] for k in (
        "stream_direct", "stream_proxy", "pp_direct", "pp_proxy", "lat_direct", "lat_proxy")}
    bound: dict[str, bool] = dict.fromkeys(res, False)
    cpu: dict[str, list[float]] = {"echo": [], "proxy": []}
    with tempfile.TemporaryDirectory(prefix="multiconn-proxy-bench-") as tmpdir, \
            ServerProc("ours", pin_cpu=0) as echo, \
            OurProxy(echo.port) as plain, \
            OurProxy(echo.port, ["latency:ms=50,direction=downstream"]) as slow:
        echo.prime()
        tmp = Path(tmpdir)
        for _ in range(rounds):
            for key, port in (("stream_direct", echo.port), ("stream_proxy", plain.port)):
                c_echo, c_proxy = cpu_seconds(echo.pid), cpu_seconds(plain.pid)
                t0 = time.monotonic()
                run = _stream(exe, port, duration)
                res[key].append(run["mb_per_sec"])
                bound[key] |= run["client_cpu"] > SATURATED
                if key == "stream_proxy":
                    wall = time.monotonic() - t0
                    cpu["echo"].append((cpu_seconds(echo.pid) - c_echo) / wall)
                    cpu["proxy"].append((cpu_seconds(plain.pid) - c_proxy) / wall)
            for key, port in (("pp_direct", echo.port), ("pp_proxy", plain.port)):
                run = _pingpong(exe, port, duration, tmp)
                res[key].append(run["p50_us"])
                bound[key] |= run["client_cpu"] > SATURATED
            for key, port in (("lat_direct", echo.port), ("lat_proxy", slow.port)):
                run = _pingpong(exe, port, max(1.0, duration / 2), tmp)
                res[key].append(run["p50_us"])
                bound[key] |= run["client_cpu"] > SATURATED
    med = {k: statistics.median(v) for k, v in res.items()}
    return {"runs": res, "bound": bound, "cpu": cpu, "median": med,
            "stream_ratio": med["stream_proxy"] / med["stream_direct"],
            "pp1_added_us": med["pp_proxy"] - med["pp_direct"],
            "latency50_added_ms": (med["lat_proxy"] - med["lat_direct"]) / 1e3}


def _line(name: str, values: list[float], unit: str, bound: bool) -> str:
    s = summary(values)
    flag = "  client-bound" if bound else ""
    return (f"  {name:<22} min {s['min']:10.2f}  median {s['median']:10.2f}  "
            f"max {s['max']:10.2f} {unit}{flag}")


def print_echo(res: dict[str, Any]) -> None:
    runs, bound, cpu = res["runs"], res["bound"], res["cpu"]
    print("\nproxy overhead on our EchoServer")
    print("stream10: 10 connections, 64 KiB in flight each (MB/s echoed)")
    print(_line("direct", runs["stream_direct"], "MB/s", bound["stream_direct"]))
    print(_line("through proxy", runs["stream_proxy"], "MB/s", bound["stream_proxy"]))
    print(f"  proxy CPU {statistics.median(cpu['proxy']):.0%} of a core, echo server "
          f"{statistics.median(cpu['echo']):.0%} (while proxied)")
    print("pp1: 1 connection, 64 B ping-pong (median round trip, us)")
    print(_line("direct", runs["pp_direct"], "us", bound["pp_direct"]))
    print(_line("through proxy", runs["pp_proxy"], "us", bound["pp_proxy"]))
    print("latency50: Latency(ms=50) downstream, 64 B ping-pong (median round trip, us)")
    print(_line("direct", runs["lat_direct"], "us", bound["lat_direct"]))
    print(_line("through proxy", runs["lat_proxy"], "us", bound["lat_proxy"]))
    print(f"  stream10 proxied / direct {res['stream_ratio']:.2f}; pp1 added "
          f"{res['pp1_added_us']:.0f} us; latency50 added p50 {res['latency50_added_ms']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="rounds (default 5; quick 3)")
    parser.add_argument("--requests", type=int, help="redis-benchmark -n (default 100000)")
    parser.add_argument("--duration", type=float, default=2.0,
                        help="echo: seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="3 short rounds")
    parser.add_argument("--workloads", default="redis,echo")
    parser.add_argument("--pin", action="store_true",
                        help="redis: redis-server on CPU 0, relay and redis-benchmark on CPU 1")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-asyncio-relay", type=int, metavar="TARGET_PORT",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_asyncio_relay:
        serve_asyncio_relay(args.serve_asyncio_relay)
        return 0
    rounds = args.rounds or (3 if args.quick else 5)
    requests = args.requests or (20_000 if args.quick else 100_000)
    duration = 0.5 if args.quick else args.duration
    print(f"proxy benchmark: {machine_note()}")
    out: dict[str, Any] = {}
    wls = args.workloads.split(",")
    if "redis" in wls:
        out["redis"] = run_redis(rounds, requests, pinned=args.pin)
        print_redis(out["redis"])
    if "echo" in wls:
        out["echo"] = run_echo(rounds, duration)
        print_echo(out["echo"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
