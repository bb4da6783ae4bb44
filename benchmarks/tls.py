"""TLS handshakes/s and TLS echo throughput: our EchoServer(tls=...) against asyncio, same run.

    python benchmarks/tls.py [--repeat N] [--seconds S] [--payload-mib M]

Each server runs in its own process (pinned to CPU 0 where the OS allows), with the same
certificate from a throw-away trustme CA (its key written 0600 in a private temporary
directory, removed at the end).  The clients run in this process (pinned to CPU 1):

* handshakes: ``openssl s_time -new`` (a C client, so the server is the bottleneck) makes a
  full TLS handshake per connection for S seconds; we report connections/s;
* throughput: 4 TLS connections of :class:`MultiConnClient` each echo M MiB; we report MB/s
  echoed.

Repetitions alternate between servers so drift hits both alike; we print the median of each
and the ratio ours/asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVERS = ("ours", "asyncio")


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def _server_context(certfile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile)
    return ctx


def serve(kind: str, certfile: str) -> None:
    """Child process: serve TLS echo on 127.0.0.1, print the port, run until stdin closes."""
    _pin(0)
    ctx = _server_context(certfile)
    if kind == "ours":
        from pytest_multiconn import EchoServer

        with EchoServer(tls=ctx, backlog=4096) as server:
            print(server.port, flush=True)
            sys.stdin.read()
        return

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
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


class Child:
    def __init__(self, kind: str, certfile: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--certfile", certfile],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(20)
        self.proc.stdout.close()


def handshakes_per_second(port: int, cafile: str, seconds: int) -> float:
    out = subprocess.run(
        [
            "openssl",
            "s_time",
            "-connect",
            f"127.0.0.1:{port}",
            "-new",
            "-time",
            str(seconds),
            "-CAfile",
            cafile,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    ).stdout
    match = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not match:
        raise RuntimeError(f"openssl s_time gave no count:\n{out}")
    return int(match.group(1)) / float(match.group(2))


def throughput(port: int, client_ctx: ssl.SSLContext, payload: bytes) -> float:
    from pytest_multiconn import MultiConnClient

    start = time.perf_counter()
    MultiConnClient(
        ("127.0.0.1", port), 4, [payload], tls=client_ctx, server_hostname="localhost", timeout=120
    ).run().check()
    return 4 * len(payload) / (time.perf_counter() - start) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--payload-mib", type=int, default=16)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--certfile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.certfile)
        return 0
    if shutil.which("openssl") is None:
        print("benchmarks/tls.py needs openssl on PATH (for s_time)", file=sys.stderr)
        return 2

    import trustme

    from pytest_multiconn._tls import client_context

    _pin(1)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    client_ctx = client_context(ca)
    payload = os.urandom(args.payload_mib << 20)
    hs: dict[str, list[float]] = {k: [] for k in SERVERS}
    tp: dict[str, list[float]] = {k: [] for k in SERVERS}
    with tempfile.TemporaryDirectory(prefix="multiconn-bench-tls-") as tmp:
        os.chmod(tmp, 0o700)
        certfile = str(Path(tmp) / "server.pem")
        fd = os.open(certfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.private_key_and_cert_chain_pem.bytes())
        cafile = str(Path(tmp) / "ca.pem")
        ca.cert_pem.write_to_path(cafile)
        for rep in range(args.repeat):
            order = SERVERS if rep % 2 == 0 else SERVERS[::-1]
            for kind in order:
                child = Child(kind, certfile)
                try:
                    hs[kind].append(handshakes_per_second(child.port, cafile, args.seconds))
                    tp[kind].append(throughput(child.port, client_ctx, payload))
                finally:
                    child.close()
                print(
                    f"rep {rep + 1} {kind:8} {hs[kind][-1]:8.0f} handshakes/s "
                    f"{tp[kind][-1]:8.1f} MB/s",
                    flush=True,
                )
    print()
    print(f"{'':10} {'handshakes/s':>14} {'echo MB/s':>10}   (median of {args.repeat})")
    for kind in SERVERS:
        print(f"{kind:10} {statistics.median(hs[kind]):14.0f} {statistics.median(tp[kind]):10.1f}")
    hs_ratio = statistics.median(hs["ours"]) / statistics.median(hs["asyncio"])
    tp_ratio = statistics.median(tp["ours"]) / statistics.median(tp["asyncio"])
    print(f"{'ratio':10} {hs_ratio:14.2f} {tp_ratio:10.2f}   (ours / asyncio; target >= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
