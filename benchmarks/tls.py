"""TLS handshakes/s and TLS echo throughput: our EchoServer(tls=...) against asyncio, same run.

    python benchmarks/tls.py [--repeat N] [--seconds S] [--hs-conns C] [--stream-conns C]
                             [--window BYTES] [--key-type ecdsa|rsa] [--servers ours,asyncio]

Each server runs alone in its own process, pinned to CPU 0; the load generator is
benchmarks/tlsload.c (C, OpenSSL, epoll; compiled with ``cc`` on first use, cached), pinned to
CPU 1, so the server and not the client is the bottleneck.  Both servers get the same
``ssl.create_default_context(Purpose.CLIENT_AUTH)`` with the same certificate and key (one
throw-away trustme CA, ECDSA P-256 unless ``--key-type rsa``; the key file is 0600 in a
private temporary directory, removed at the end), so they negotiate the same protocol,
cipher and key-exchange group (printed, as the client saw them) and send the same session
tickets.  The client never offers a session, so every handshake is a full one (``resumed``
is printed and must stay 0).

* handshakes: C connections at once, each looping connect, full handshake, ``close_notify``,
  wait for the server's close; we report completed cycles per second;
* throughput: C connections each keep WINDOW bytes in flight, echoed and checked by the
  client; we report MB/s echoed.

All servers stay up for the whole run and the runs alternate between them, round-robin (the
order rotates each repetition), so drift and the machine's other load hit every server alike;
we print each run with the server's and the load generator's CPU share, the median of each
server, and the ratio ours/asyncio.  A run whose load generator used more than 90% of its core
is marked "client-bound": the server may have had spare capacity.  A server CPU share well
under 100% means the server was waiting, or (on a shared machine) did not get the CPU: then
"per CPU-s", the rate divided by the server's CPU share, is the figure to compare (the work
each server does per CPU-second it got).

Baselines: ``asyncio`` is the textbook ``asyncio.Protocol`` echo server over
``loop.create_server(ssl=ctx)`` that honours ``pause_writing`` (the same back-pressure ours
applies); ``asyncio-streams`` (not run unless named in ``--servers``) is the
``asyncio.start_server`` StreamReader/StreamWriter version, one task per connection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402 - after sys.path
    SATURATED,
    cpu_seconds,
    machine_note,
    pin,
    profile_loop_thread,
)

ALL_SERVERS = ("ours", "asyncio", "asyncio-streams")
DEFAULT_SERVERS = ("ours", "asyncio")


# -- the servers (child processes) ------------------------------------------------------------
def _server_context(certfile: str) -> ssl.SSLContext:
    # The one context both servers get: same options, certificate, tickets and ciphers.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile)
    return ctx


def serve(kind: str, certfile: str, profile: str | None) -> None:
    """Child process: serve TLS echo on 127.0.0.1, print the port, run until stdin closes."""
    ctx = _server_context(certfile)
    if kind == "ours":
        from pytest_multiconn import EchoServer

        if profile:
            profile_loop_thread(profile)
        with EchoServer(tls=ctx, backlog=4096) as server:
            print(server.port, flush=True)
            sys.stdin.read()  # the loop runs in its own thread; this one waits without the GIL
        return

    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

        def pause_writing(self) -> None:
            self.transport.pause_reading()

        def resume_writing(self) -> None:
            self.transport.resume_reading()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "asyncio":
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=ctx, backlog=4096)
        else:
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=4096)
        done = loop.create_future()

        def on_stdin() -> None:
            if not os.read(0, 4096) and not done.done():
                done.set_result(None)

        loop.add_reader(0, on_stdin)
        print(server.sockets[0].getsockname()[1], flush=True)
        await done
        loop.remove_reader(0)
        server.close()

    asyncio.run(main())


class Child:
    """One server process, pinned to CPU 0 (all its threads)."""

    def __init__(self, kind: str, certfile: str, profile: str | None = None) -> None:
        cmd = [sys.executable, __file__, "--serve", kind, "--certfile", certfile]
        if profile:
            cmd += ["--profile", profile]
        env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.pid = self.proc.pid
        pin(self.pid, 0)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def close(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.proc.stdout.close()


# -- the load generator -----------------------------------------------------------------------
def build_tlsload() -> Path:
    """Compile tlsload.c (cached by content hash); raise RuntimeError with a hint if we can't."""
    src = HERE / "tlsload.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache = cache_home / "pytest-multiconn-bench"
    exe = cache / f"tlsload-{digest}"
    if exe.exists():
        return exe
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc/clang): apt-get install gcc libssl-dev")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_suffix(".tmp")
    done = subprocess.run(
        [cc, "-O2", "-o", str(tmp), str(src), "-lssl", "-lcrypto"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(
            f"building tlsload.c failed (OpenSSL 3 headers needed: apt-get install libssl-dev):\n"
            f"{done.stderr}"
        )
    tmp.replace(exe)
    return exe


def run_load(exe: Path, child: Child, mode: str, args: list[str], seconds: float) -> dict[str, Any]:
    """Run tlsload against ``child``; add the server's CPU share over the whole run."""
    cmd = [str(exe), mode, "127.0.0.1", str(child.port), *args, "-d", str(seconds), "-w", "0.5"]
    cpu0, t0 = child.cpu(), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    pin(proc.pid, 1)
    out, _ = proc.communicate(timeout=seconds + 60)
    wall, cpu = time.monotonic() - t0, child.cpu() - cpu0
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    if not lines or "error" in lines[-1]:
        raise RuntimeError(f"tlsload {mode} against port {child.port}: {out.strip()!r}")
    result: dict[str, Any] = lines[-1]
    result["server_cpu"] = cpu / wall
    result["client_cpu"] = result["cpu"] / result["seconds"]
    if result["resumed"]:
        raise RuntimeError(f"{result['resumed']} handshakes were resumed: not a fair comparison")
    if result.get("mismatches"):
        raise RuntimeError(f"the echo came back wrong {result['mismatches']} times")
    return result


def check_server(child: Child, cafile: str) -> str:
    """One verified handshake from Python's ssl: proves the certificate; returns what it got."""
    ctx = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection(("127.0.0.1", child.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"ping")
        got = tls.recv(16)
        if got != b"ping":
            raise RuntimeError(f"echo check failed: got {got!r}")
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else '?'}"


# -- the driver -------------------------------------------------------------------------------
def measure(exe: Path, child: Child, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    if workload == "handshake":
        r = run_load(exe, child, "handshake", ["-c", str(args.hs_conns)], args.seconds)
        r["rate"] = r["cycles"] / r["seconds"]
        r["text"] = f"{r['rate']:8.0f} handshakes/s"
    else:
        load = ["-c", str(args.stream_conns), "-W", str(args.window)]
        r = run_load(exe, child, "stream", load, args.seconds)
        r["rate"] = r["bytes"] / r["seconds"] / 1e6
        r["text"] = f"{r['rate']:8.1f} MB/s echo  "
    return r


def report(
    servers: list[str],
    workloads: list[str],
    results: dict[str, dict[str, list[dict[str, Any]]]],
    seen: dict[str, set[str]],
    repeat: int,
) -> None:
    """Medians and ratios; "per CPU-s" is the rate divided by the server's CPU share."""
    print()
    for kind in servers:
        print(f"{kind:16} negotiated: {'; '.join(sorted(seen[kind]))}")
    print()
    print(f"{'':16} {'median':>10} {'per CPU-s':>10} {'server CPU':>11} {'tlsload CPU':>12}"
          f"   (median of {repeat})")
    for w in workloads:
        unit = "handshakes/s" if w == "handshake" else "MB/s echo"
        rate: dict[str, float] = {}
        eff: dict[str, float] = {}
        for kind in servers:
            runs = results[w][kind]
            rate[kind] = statistics.median(r["rate"] for r in runs)
            eff[kind] = statistics.median(r["rate"] / max(r["server_cpu"], 1e-9) for r in runs)
            scpu = statistics.median(r["server_cpu"] for r in runs)
            ccpu = statistics.median(r["client_cpu"] for r in runs)
            bound = sum(r["client_cpu"] > SATURATED for r in runs)
            note = f"  {bound}/{len(runs)} runs client-bound" if bound else ""
            print(f"{kind:16} {rate[kind]:10.1f} {eff[kind]:10.1f} {scpu:11.0%} {ccpu:12.0%}"
                  f"   {unit}{note}")
        if "ours" in rate:
            for base in servers:
                if base != "ours":
                    print(f"{'ratio vs ' + base:16} {rate['ours'] / rate[base]:10.2f} "
                          f"{eff['ours'] / eff[base]:10.2f}   ({unit}, ours / {base}; "
                          "target >= 1.0)")
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run")
    parser.add_argument("--hs-conns", type=int, default=32, help="handshake connections at once")
    parser.add_argument("--stream-conns", type=int, default=8, help="echo connections")
    parser.add_argument("--window", type=int, default=256 * 1024, help="bytes in flight per conn")
    parser.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated, from {','.join(ALL_SERVERS)}")
    parser.add_argument("--workloads", default="handshake,stream")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile our server's loop thread over the whole run into FILE")
    parser.add_argument("--serve", choices=ALL_SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--certfile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.certfile, args.profile)
        return 0
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in ALL_SERVERS]
    if bad or not servers:
        parser.error(f"--servers: unknown {bad}; choose from {','.join(ALL_SERVERS)}")
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if any(w not in ("handshake", "stream") for w in workloads) or not workloads:
        parser.error("--workloads: handshake, stream or both")

    import trustme

    exe = build_tlsload()
    key_type = trustme.KeyType.RSA if args.key_type == "rsa" else trustme.KeyType.ECDSA
    ca = trustme.CA(key_type=key_type)
    cert = ca.issue_cert("localhost", "127.0.0.1", key_type=key_type)
    print(f"machine: {machine_note()}")
    print(f"servers pinned to CPU 0, tlsload pinned to CPU 1; {args.seconds}s per run after "
          f"0.5s warm-up; handshake: {args.hs_conns} connections at once; echo: "
          f"{args.stream_conns} connections x {args.window} B in flight")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        w: {s: [] for s in servers} for w in workloads
    }
    seen: dict[str, set[str]] = {s: set() for s in servers}
    with tempfile.TemporaryDirectory(prefix="multiconn-bench-tls-") as tmp:
        os.chmod(tmp, 0o700)
        certfile = str(Path(tmp) / "server.pem")
        fd = os.open(certfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.private_key_and_cert_chain_pem.bytes())
        cafile = str(Path(tmp) / "ca.pem")
        ca.cert_pem.write_to_path(cafile)
        # Every server stays up for the whole run (an idle one costs nothing), so the runs
        # can alternate between them every few seconds: drift and the machine's other load
        # then hit each server alike.
        children: dict[str, Child] = {}
        try:
            for kind in servers:
                profile = args.profile if args.profile and kind == "ours" else None
                children[kind] = Child(kind, certfile, profile)
                seen[kind].add(f"python ssl: {check_server(children[kind], cafile)}")
            for rep in range(args.repeat):
                k = rep % len(servers)
                for w in workloads:
                    for kind in servers[k:] + servers[:k]:
                        r = measure(exe, children[kind], w, args)
                        results[w][kind].append(r)
                        seen[kind].add(f"tlsload: {r['version']} {r['cipher']} group "
                                       f"{r['group']} server key {r['peer_key']}")
                        flag = "  client-bound" if r["client_cpu"] > SATURATED else ""
                        print(f"rep {rep + 1} {kind:16} {r['text']} server CPU "
                              f"{r['server_cpu']:4.0%} tlsload CPU {r['client_cpu']:4.0%} "
                              f"errors {r['errors']}{flag}", flush=True)
        finally:
            for child in children.values():
                child.close()
    report(servers, workloads, results, seen, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
