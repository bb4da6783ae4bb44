"""Shared machinery of the benchmark scripts: the C load generator, server processes, /proc.

Nothing here is part of the package.  The load generator is compiled with ``cc -O2`` into a
cache directory the first time a benchmark needs it (again whenever loadgen.c changes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

#: CPU share of one core above which the load generator counts as saturated.
SATURATED = 0.90

ALL_SERVERS = ("ours", "asyncio", "uvloop", "tutorial")
#: The servers compared by default: the tutorial's server is there on request (``--servers``);
#: it burns a core while idle and cannot hold 10,000 connections, which says all it has to say.
DEFAULT_SERVERS = ("ours", "asyncio", "uvloop")


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401 - only probing whether it is installed
    except ImportError:
        return False
    return True


def available_servers(wanted: Sequence[str] = ALL_SERVERS) -> tuple[list[str], list[str]]:
    """(servers to run, notes about the ones left out)."""
    notes = []
    kinds = list(wanted)
    if "uvloop" in kinds and not have_uvloop():
        kinds.remove("uvloop")
        notes.append("uvloop is not installed (pip install -e '.[bench]'): no uvloop baseline")
    return kinds, notes


# -- the load generator ---------------------------------------------------------------------
def build_loadgen() -> Path:
    """Compile loadgen.c (cached by content hash); raise RuntimeError with a hint if no cc."""
    src = HERE / "loadgen.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache = cache_home / "pytest-multiconn-bench"
    exe = cache / f"loadgen-{digest}"
    if exe.exists():
        return exe
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError(
            "no C compiler (cc/gcc/clang) found: the benchmarks need one to build their load "
            "generator (apt-get install gcc); set CC=... to choose one"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_suffix(".tmp")
    subprocess.run([cc, "-O2", "-o", str(tmp), str(src)], check=True)
    tmp.replace(exe)
    return exe


def pin(pid: int, cpu: int) -> bool:
    """Pin ``pid`` (all its threads) to one CPU when the machine has more than one."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        task_dir = Path(f"/proc/{pid}/task")
        tids = [int(t) for t in os.listdir(task_dir)] if task_dir.exists() else [pid]
        for tid in tids:
            os.sched_setaffinity(tid, {cpu})
    except OSError:
        return False
    return True


# -- /proc readings -------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    return _status_field(pid, "VmRSS")


def hwm_bytes(pid: int) -> int:
    return _status_field(pid, "VmHWM")


def reset_hwm(pid: int) -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {name}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- server processes -----------------------------------------------------------------------
class ServerProc:
    """One echo server in its own process (benchmarks/servers.py), pinned to CPU 0."""

    def __init__(self, kind: str, *, pin_cpu: int | None = 0, timeout: float = 20.0) -> None:
        self.kind = kind
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "servers.py"), "--kind", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, timeout, f"{kind} server did not report its port")
        if not line.startswith(b"PORT "):
            self.close()
            raise RuntimeError(f"{kind} server said {line!r} instead of its port")
        self.port = int(line.split()[1])
        self.pid = self.proc.pid
        self.pinned = pin(self.pid, pin_cpu) if pin_cpu is not None else False

    def __enter__(self) -> ServerProc:
        return self

    def prime(self, size: int = 64 * 1024, timeout: float = 10.0) -> None:
        """One connection that echoes ``size`` bytes, half-closes and waits for the server's close.

        Why: a fresh CPython 3.11 process running asyncio's selector transport serves each of its
        ``recv(262144)`` calls with mmap/munmap (glibc's mmap threshold starts at 128 KiB and
        only rises once a buffer that large is freed at full size, which first happens when a
        connection reaches EOF).  Traffic on the same connections does not end that state;
        one closed connection does.  Every server is primed the same way before it is timed, so
        the figures are those of a server that has served a connection, as in real use.
        """
        pattern = bytes(range(256)) * (size // 256 + 1)
        pattern = pattern[:size]
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(pattern)
            got = bytearray()
            while len(got) < size:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"{self.kind} server closed during priming")
                got += chunk
            if bytes(got) != pattern:
                raise RuntimeError(f"{self.kind} server echoed wrong bytes during priming")
            sock.shutdown(socket.SHUT_WR)
            # Wait (bounded by the socket timeout) for the server's own close: it has seen EOF.
            if sock.recv(1):
                raise RuntimeError(f"{self.kind} server sent data after the echo")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _readline(stream: Any, timeout: float, what: str) -> bytes:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError(f"{what} within {timeout}s")
    line: bytes = stream.readline()
    if not line:
        raise RuntimeError(f"{what}: it exited")
    return line.strip()


@dataclass
class LoadgenRun:
    """A running load generator; ``ready()`` / ``release()`` for the modes that pause."""

    proc: subprocess.Popen[bytes]
    timeout: float
    lines: list[dict[str, Any]] = field(default_factory=list)

    def ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, self.timeout, "load generator did not get ready")
        data: dict[str, Any] = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"load generator: {data['error']}")
        return data

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise RuntimeError(f"load generator did not finish within {self.timeout}s") from None
        lines = [json.loads(x) for x in out.splitlines() if x.strip()]
        if not lines:
            raise RuntimeError(f"load generator printed nothing (exit {self.proc.returncode})")
        data: dict[str, Any] = lines[-1]
        if "error" in data:
            raise RuntimeError(f"load generator: {data['error']}")
        return data


def start_loadgen(
    exe: Path, mode: str, port: int, args: Sequence[str], *, timeout: float, pin_cpu: int | None = 1
) -> LoadgenRun:
    proc = subprocess.Popen(
        [str(exe), mode, "127.0.0.1", str(port), *args, "-t", str(timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    if pin_cpu is not None:
        pin(proc.pid, pin_cpu)
    return LoadgenRun(proc, timeout + 15)


# -- statistics -------------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, float]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan"), "n": 0}
    return {
        "min": min(vals),
        "median": statistics.median(vals),
        "max": max(vals),
        "n": len(vals),
    }


def fmt(value: float, unit: str = "") -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text}{unit}"


def machine_note() -> str:
    cpus = os.cpu_count() or 1
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpus} cores{f' ({model})' if model else ''}, shared by server and load generator; "
        f"Python {sys.version.split()[0]}; Linux {os.uname().release}"
    )


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.01) -> None:
    """Bounded poll of a value owned by another process (the benchmarks' only polling)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def profile_loop_thread(path: str) -> None:
    """cProfile our loop thread (cProfile sees only the thread that enables it)."""
    import cProfile

    from pytest_multiconn.core import loop as _loop

    original = _loop.Loop._run

    def _run(self: _loop.Loop) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()
            prof.dump_stats(path)

    _loop.Loop._run = _run  # type: ignore[method-assign]
