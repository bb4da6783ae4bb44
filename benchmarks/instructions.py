"""Server instructions per round trip / per MB under callgrind: ours, asyncio, uvloop.

    python benchmarks/instructions.py [--servers ours,asyncio,uvloop] [--rounds N] [--mb M]

Why instruction counts: on a loaded machine wall-clock and CPU-time figures move by 30% from
one run to the next, while the instructions a server executes for a fixed workload barely move.
Each server (benchmarks/servers.py) runs under ``valgrind --tool=callgrind --trace-children=no``
(user space only: the kernel's recv / send / epoll work, the same for every server, is not
counted), is primed (one connection echoed and closed, see ``ServerProc.prime``), then serves a
fixed workload from a Python client in this process:

* ping-pong: 100 connections, each sends 1 KiB, waits for all of it to come back, repeats,
  until exactly ``--rounds`` round trips are done;
* streaming: 10 connections, each keeps up to 64 KiB in flight, until ``--mb`` MiB came back;
* accept: ``--conns`` connections, opened ACCEPT_GROUP at a time (so the listener has that many
  waiting, as under the C load generator's idle10k), 64 B echoed once on each, all kept open,
  then closed together: per connection that is one accept, one echo and one close.

Each workload runs twice per server, once short and once long; the difference of the two
totals over the difference of the two workloads is the cost per operation, with start-up,
priming and shutdown cancelled out.  Callgrind slows the server about 50x, so the client is
never the bottleneck; the per-event cost it measures depends a little on how many events one
poll returns, which is why the number of connections is fixed.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HERE, PYTHON, ROOT, have_uvloop

PING_CONNS, PING_SIZE = 100, 1024
STREAM_CONNS, STREAM_WINDOW = 10, 64 * 1024
ACCEPT_GROUP, ACCEPT_SIZE = 100, 64
TIMEOUT = 600.0  # bound on one workload under callgrind


def _prime(port: int, size: int = 64 * 1024) -> None:
    # The same priming as _common.ServerProc.prime: echo, half-close, wait for the close.
    pattern = (bytes(range(256)) * (size // 256 + 1))[:size]
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(pattern)
        got = bytearray()
        while len(got) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("server closed during priming")
            got += chunk
        if bytes(got) != pattern:
            raise RuntimeError("server echoed wrong bytes during priming")
        sock.shutdown(socket.SHUT_WR)
        if sock.recv(1):
            raise RuntimeError("server sent data after the echo")


def _connect(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


def _close(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def ping_pong(port: int, rounds: int) -> None:
    """Exactly ``rounds`` round trips of PING_SIZE bytes over PING_CONNS connections."""
    socks = _connect(port, PING_CONNS)
    msg = bytes(range(256)) * (PING_SIZE // 256)
    sel = selectors.DefaultSelector()
    started = 0
    pending: dict[socket.socket, int] = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        if started < rounds:
            s.sendall(msg)  # 1 KiB always fits an empty send buffer
            pending[s] = PING_SIZE
            started += 1
    done = 0
    deadline = time.monotonic() + TIMEOUT
    while done < rounds:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ping-pong: {done} of {rounds} round trips in {TIMEOUT}s")
        for key, _ in sel.select(1.0):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            data = s.recv(65536)
            if not data:
                raise RuntimeError("server closed a ping-pong connection")
            pending[s] -= len(data)
            if pending[s] == 0:
                done += 1
                if started < rounds:
                    s.sendall(msg)
                    pending[s] = PING_SIZE
                    started += 1
    sel.close()
    _close(socks)


def streaming(port: int, total: int) -> None:
    """``total`` bytes echoed over STREAM_CONNS connections, each with a 64 KiB window."""
    socks = _connect(port, STREAM_CONNS)
    block = (bytes(range(251)) * (STREAM_WINDOW // 251 + 1))[:STREAM_WINDOW]
    per_conn = total // STREAM_CONNS
    sent = dict.fromkeys(socks, 0)
    recvd = dict.fromkeys(socks, 0)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    finished = 0
    deadline = time.monotonic() + TIMEOUT
    while finished < len(socks):
        if time.monotonic() > deadline:
            raise RuntimeError(f"streaming: {sum(recvd.values())} of {total} bytes in {TIMEOUT}s")
        for key, mask in sel.select(1.0):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if mask & selectors.EVENT_READ:
                data = s.recv(262144)
                if not data:
                    raise RuntimeError("server closed a streaming connection")
                recvd[s] += len(data)
                if recvd[s] == per_conn:
                    finished += 1
                    sel.unregister(s)
                    continue
            window = min(STREAM_WINDOW - (sent[s] - recvd[s]), per_conn - sent[s])
            if window > 0:
                try:  # noqa: SIM105 - the client's own hot loop
                    sent[s] += s.send(block[:window])
                except BlockingIOError:
                    pass
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if sent[s] < per_conn else 0)
            if want != key.events:
                sel.modify(s, want)
    sel.close()
    _close(socks)


def accepting(port: int, conns: int) -> None:
    """``conns`` connections, ACCEPT_GROUP connecting at once, one ACCEPT_SIZE echo each."""
    msg = bytes(range(ACCEPT_SIZE))
    held: list[socket.socket] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(held) < conns:
            # connect() completes in the kernel's backlog before the server accepts, so the
            # whole group waits on the listener at once and the server accepts it in batches.
            group = [
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                for _ in range(min(ACCEPT_GROUP, conns - len(held)))
            ]
            held += group
            for s in group:
                s.sendall(msg)
            for s in group:
                got = b""
                while len(got) < ACCEPT_SIZE:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"accept: {len(held)} of {conns} in {TIMEOUT}s")
                    chunk = s.recv(ACCEPT_SIZE - len(got))
                    if not chunk:
                        raise RuntimeError("server closed a new connection")
                    got += chunk
                if got != msg:
                    raise RuntimeError("server echoed wrong bytes to a new connection")
    finally:
        _close(held)


def run_once(
    kind: str, workload: str, amount: int, valgrind: str, keep: Path | None = None
) -> int:
    """Total user-space instructions of one server process serving ``amount`` of a workload.

    ``keep``: a folder to leave the callgrind output in (``callgrind_annotate`` reads it).
    """
    with tempfile.TemporaryDirectory(prefix="multiconn-cg-") as tmp:
        folder = Path(tmp) if keep is None else keep
        out = folder / f"callgrind.{kind}.{workload}.{amount}.out"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONHASHSEED="0")
        proc = subprocess.Popen(
            [
                valgrind,
                "--tool=callgrind",
                "--trace-children=no",
                f"--callgrind-out-file={out}",
                PYTHON,
                str(HERE / "servers.py"),
                "--kind",
                kind,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()  # bounded: the server either prints or exits
            if not line.startswith(b"PORT "):
                raise RuntimeError(f"{kind} under callgrind said {line!r} instead of its port")
            port = int(line.split()[1])
            _prime(port)
            if workload == "ping":
                ping_pong(port, amount)
            elif workload == "accept":
                accepting(port, amount)
            else:
                streaming(port, amount)
        finally:
            proc.stdin.close()
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        text = out.read_text(errors="replace")
        match = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no instruction total in {kind}'s callgrind output")
        return int(match.group(1))


def per_op(
    kind: str, workload: str, small: int, large: int, valgrind: str, *, keep: Path | None
) -> float:
    a = run_once(kind, workload, small, valgrind, keep)
    b = run_once(kind, workload, large, valgrind, keep)
    return (b - a) / (large - small)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="ours,asyncio,uvloop")
    parser.add_argument("--rounds", type=int, default=20_000, help="ping-pong round trips")
    parser.add_argument("--mb", type=int, default=64, help="streaming MiB")
    parser.add_argument("--conns", type=int, default=2000, help="accepted connections")
    parser.add_argument("--workloads", default="ping,stream", help="of ping,stream,accept")
    parser.add_argument("--keep", type=Path, help="leave the callgrind outputs in this folder")
    args = parser.parse_args(argv)
    if args.rounds < 1000 or args.mb < 8 or args.conns < 1000:
        parser.error(
            "--rounds and --conns must be >= 1000 and --mb >= 8 (the short run takes a tenth)"
        )
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in args.servers.split(",") if k != "uvloop" or have_uvloop()]
    workloads = args.workloads.split(",")
    print(f"# callgrind, user-space instructions of the server process ({sys.version.split()[0]})")
    print(
        f"# {'server':<9} {'per round trip (100 x 1 KiB)':>30} {'per MiB (10 x 64 KiB)':>24}"
        f" {'per connection (accept, echo, close)':>38}"
    )
    for kind in kinds:
        ping = stream = accept = float("nan")
        if "ping" in workloads:
            small = args.rounds // 10
            ping = per_op(kind, "ping", small, small + args.rounds, valgrind, keep=args.keep)
        if "stream" in workloads:
            mib = 1024 * 1024
            # Multiples of the connection count, so every connection carries the same bytes.
            small = args.mb // 8 * mib // STREAM_CONNS * STREAM_CONNS
            large = small + args.mb * mib // STREAM_CONNS * STREAM_CONNS
            stream = per_op(kind, "stream", small, large, valgrind, keep=args.keep) * mib
        if "accept" in workloads:
            small = args.conns // 10 // ACCEPT_GROUP * ACCEPT_GROUP
            large = small + args.conns // ACCEPT_GROUP * ACCEPT_GROUP
            accept = per_op(kind, "accept", small, large, valgrind, keep=args.keep)
        print(f"  {kind:<9} {ping:>30,.0f} {stream:>24,.0f} {accept:>38,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
