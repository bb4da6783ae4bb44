"""A panel of REAL third-party servers, started by the tests on 127.0.0.1 and an ephemeral port.

Independent of ``pytest_multiconn`` (nothing here imports it): the panel is the yardstick the
fault-injection suite is checked against, so its truths are measured with plain sockets and
``/proc``.

* :data:`SERVERS` maps a name (``"nginx"``, ``"uvicorn-h11"``, ``"redis-limit-1mb"``...) to a
  :class:`ServerSpec`: its protocol (``"http"``, ``"redis"``, ``"memcached"``, ``"echo"``), the
  command that runs it and what it needs installed.
* :func:`start_server` starts one (config files in a directory of the caller's, e.g.
  ``tmp_path``), waits until it answers a real request of its protocol (bounded; the failure
  message has the log's tail) and returns a :class:`RealServer`; :func:`running` is the same
  as a context manager that always stops it.  :func:`missing` says why a server cannot run here
  (``None`` when it can), :func:`require` turns that into ``pytest.skip``.
* :meth:`RealServer.stop` kills the whole process group (nginx and gunicorn masters fork
  workers), then any straggler of the tree, and waits, bounded.  Every server starts in its own
  session with ``PR_SET_PDEATHSIG=SIGKILL``, so it dies with the test process.
* :meth:`RealServer.tree_pids` is the root plus every descendant (``/proc/*/stat`` ppid);
  :func:`memory_bytes` (sum of ``Pss`` from ``smaps_rollup``, falling back to ``VmRSS``) and
  :func:`cpu_seconds` (per pid: every thread's ``schedstat`` run time, falling back to
  ``utime+stime``) measure such a tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PANEL_APPS = Path(__file__).resolve().parent / "panel_apps"

#: How long a server may take to answer its first request.
START_TIMEOUT = 20.0
#: How long stop() waits for the tree to die after SIGKILL.
STOP_TIMEOUT = 5.0

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# --- process trees and their resources -------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    return int(stat[stat.rindex(")") + 2:].split()[1])


def process_tree(root: int) -> list[int]:
    """``root`` and all its living descendants (by scanning ``/proc/*/stat``), root first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    if not Path(f"/proc/{root}").exists():
        return []
    tree, todo = [root], [root]
    while todo:
        for child in sorted(children.get(todo.pop(), [])):
            tree.append(child)
            todo.append(child)
    return tree


def memory_bytes(pids: Sequence[int]) -> int:
    """Sum over ``pids`` of the proportional set size (``Pss`` of ``smaps_rollup``; ``VmRSS``
    where that cannot be read).  A pid that has gone counts 0."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            key = "Pss:"
        except OSError:
            try:
                text = Path(f"/proc/{pid}/status").read_text()
                key = "VmRSS:"
            except OSError:
                continue
        for line in text.splitlines():
            if line.startswith(key):
                total += int(line.split()[1]) * 1024
                break
    return total


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """CPU time (user + system) each pid has used so far, in seconds: the sum of its threads'
    ``schedstat`` run times (nanoseconds), or ``utime+stime`` of ``/proc/PID/stat`` (clock
    ticks) where schedstat is missing.  A pid that has gone is left out."""
    out: dict[int, float] = {}
    for pid in pids:
        ns, ok = 0, False
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
                ok = True
            except (OSError, ValueError, IndexError):
                continue
        if ok:
            out[pid] = ns / 1e9
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def runnable_seconds(pids: Sequence[int]) -> dict[int, float]:
    """Time each pid's threads have spent runnable so far (on a CPU, or ready and waiting for
    one), in seconds: the sum of the first two ``schedstat`` fields of every thread.  A process
    that spins is runnable all the time however loaded the machine is, so this tells a spinner
    from a sleeper where its CPU share cannot (two xdist workers and a CPU burner left a
    spinning gunicorn worker 20% of a CPU).  Pids without ``schedstat`` are left out."""
    out: dict[int, float] = {}
    for pid in pids:
        ns, ok = 0, False
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                ns += int(fields[0]) + int(fields[1])
                ok = True
            except (OSError, ValueError, IndexError):
                continue
        if ok:
            out[pid] = ns / 1e9
    return out


# --- the servers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """How to run one panel server.

    ``argv(port, workdir)`` is its command line (after ``setup(port, workdir)`` wrote any config
    file); ``needs`` are the executables (``/``-free names looked up on PATH and in /usr/sbin) or
    ``py:module`` names it needs; ``procs`` is how many processes its tree has once ready
    (master + workers); ``env`` is added to the environment.
    """

    name: str
    protocol: str
    argv: Callable[[int, Path], list[str]]
    needs: tuple[str, ...]
    procs: int = 1
    setup: Callable[[int, Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    notes: str = ""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def _exe(name: str) -> str:
    path = _which(name)
    if path is None:
        raise FileNotFoundError(name)
    return path


def _nginx_setup(extra: str) -> Callable[[int, Path], None]:
    def setup(port: int, workdir: Path) -> None:
        for sub in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\n"
            f"pid {workdir}/nginx.pid;\nerror_log {workdir}/logs/error.log info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"  access_log off;\n"
            f"  client_body_temp_path {workdir}/client_body;\n"
            f"  proxy_temp_path {workdir}/proxy;\n  fastcgi_temp_path {workdir}/fastcgi;\n"
            f"  uwsgi_temp_path {workdir}/uwsgi;\n  scgi_temp_path {workdir}/scgi;\n"
            f"  {extra}\n"
            f"  server {{\n    listen {HOST}:{port};\n"
            '    location / { return 200 "hello\\n"; }\n  }\n}\n'
        )

    return setup


def _nginx_argv(port: int, workdir: Path) -> list[str]:
    return [_exe("nginx"), "-p", f"{workdir}/", "-e", f"{workdir}/logs/error.log",
            "-c", f"{workdir}/nginx.conf"]


def _py(*args: str) -> Callable[[int, Path], list[str]]:
    def argv(port: int, workdir: Path) -> list[str]:
        return [sys.executable, *[a.format(port=port, host=HOST) for a in args]]

    return argv


_APPS_ENV = {"PYTHONPATH": str(PANEL_APPS)}


def _gunicorn(*extra: str) -> Callable[[int, Path], list[str]]:
    return _py("-m", "gunicorn", "--bind", "{host}:{port}", "--chdir", str(PANEL_APPS),
               "--worker-tmp-dir", "/dev/shm", *extra, "wsgi_app:app")


def _redis(*extra: str) -> Callable[[int, Path], list[str]]:
    def argv(port: int, workdir: Path) -> list[str]:
        return [_exe("redis-server"), "--port", str(port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--dir", str(workdir), *extra]

    return argv


def _memcached(port: int, workdir: Path) -> list[str]:
    user = ["-u", "root"] if os.geteuid() == 0 else []
    return [_exe("memcached"), "-l", HOST, "-p", str(port), "-U", "0", *user]


def _socat(port: int, workdir: Path) -> list[str]:
    return [_exe("socat"), f"TCP-LISTEN:{port},bind={HOST},reuseaddr,fork", "EXEC:cat"]


def _ncat(port: int, workdir: Path) -> list[str]:
    return [_exe("ncat"), "-l", HOST, str(port), "-k", "--exec", "/bin/cat"]


_SPECS = [
    ServerSpec("nginx", "http", _nginx_argv, ("nginx",), procs=2, setup=_nginx_setup(""),
               notes="default config (keepalive_requests 1000)"),
    ServerSpec("nginx-keepalive-100k", "http", _nginx_argv, ("nginx",), procs=2,
               setup=_nginx_setup("keepalive_requests 100000;")),
    ServerSpec("uvicorn-h11", "http",
               _py("-m", "uvicorn", "--host", "{host}", "--port", "{port}", "--http", "h11",
                   "--no-access-log", "--lifespan", "off", "asgi_app:app"),
               ("py:uvicorn", "py:h11"), env=_APPS_ENV),
    ServerSpec("uvicorn-httptools", "http",
               _py("-m", "uvicorn", "--host", "{host}", "--port", "{port}", "--http",
                   "httptools", "--no-access-log", "--lifespan", "off", "asgi_app:app"),
               ("py:uvicorn", "py:httptools"), env=_APPS_ENV),
    ServerSpec("hypercorn", "http",
               _py("-m", "hypercorn", "--bind", "{host}:{port}", "asgi_app:app"),
               ("py:hypercorn",), procs=2, env=_APPS_ENV),
    ServerSpec("gunicorn-sync-1", "http", _gunicorn("-w", "1"), ("py:gunicorn",), procs=2),
    ServerSpec("gunicorn-sync-2", "http", _gunicorn("-w", "2"), ("py:gunicorn",), procs=3),
    ServerSpec("gunicorn-gthread-4", "http",
               _gunicorn("-w", "1", "-k", "gthread", "--threads", "4"), ("py:gunicorn",),
               procs=2),
    ServerSpec("aiohttp", "http",
               _py(str(PANEL_APPS / "aiohttp_app.py"), "{host}", "{port}"), ("py:aiohttp",)),
    ServerSpec("redis", "redis", _redis(), ("redis-server",)),
    ServerSpec("redis-limit-1mb", "redis",
               _redis("--client-output-buffer-limit", "normal 1mb 1mb 0"), ("redis-server",)),
    ServerSpec("memcached", "memcached", _memcached, ("memcached",)),
    ServerSpec("socat-cat", "echo", _socat, ("socat", "cat")),
    ServerSpec("ncat-cat", "echo", _ncat, ("ncat", "cat")),
]

#: Every panel server by name.
SERVERS: dict[str, ServerSpec] = {spec.name: spec for spec in _SPECS}


def missing(name: str) -> str | None:
    """Why server ``name`` cannot run here (a missing binary or package), or ``None``."""
    for need in SERVERS[name].needs:
        if need.startswith("py:"):
            if importlib.util.find_spec(need[3:]) is None:
                return f"{name}: Python package {need[3:]!r} is not installed (.ci/run installs it)"
        elif _which(need) is None:
            return f"{name}: {need!r} is not installed (.ci/run installs it)"
    return None


def require(name: str) -> None:
    """``pytest.skip`` with the reason when server ``name`` cannot run here."""
    reason = missing(name)
    if reason:
        import pytest

        pytest.skip(reason)


def free_port() -> int:
    """A port that was free a moment ago (bind 127.0.0.1:0, read it, close)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- one request of each protocol: readiness probe and timing ----------------------------------

#: A request of each protocol and a test that a buffer holds its complete reply.
PROBES: dict[str, tuple[bytes, Callable[[bytes], bool]]] = {
    "http": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
             lambda buf: b"\r\n\r\n" in buf and buf.endswith(b"hello\n")),
    "redis": (b"PING\r\n", lambda buf: buf == b"+PONG\r\n"),
    "memcached": (b"version\r\n",
                  lambda buf: buf.startswith(b"VERSION ") and buf.endswith(b"\r\n")),
    "echo": (b"ping\n", lambda buf: buf == b"ping\n"),
}


def exchange(address: tuple[str, int], protocol: str, timeout: float) -> float | None:
    """One request/reply of ``protocol`` on a new connection: the seconds from connect to the
    complete reply, or ``None`` when it did not come within ``timeout`` (or the connection was
    refused, closed or reset first)."""
    request, complete = PROBES[protocol]
    start = time.monotonic()
    deadline = start + timeout
    try:
        with socket.create_connection(address, timeout=timeout) as s:
            s.sendall(request)
            buf = b""
            while not complete(buf):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    return time.monotonic() - start


# --- a running server --------------------------------------------------------------------------


@dataclass
class RealServer:
    """A started panel server.  ``pid`` is the root of its process tree (the process this
    module started: nginx/gunicorn master, or the server itself)."""

    spec: ServerSpec
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree_pids(self) -> list[int]:
        """The root pid and every living descendant, root first."""
        return process_tree(self.proc.pid)

    def worker_pids(self) -> list[int]:
        """The descendants of the root (nginx/gunicorn workers, socat/ncat children)."""
        return self.tree_pids()[1:]

    def memory(self) -> int:
        """The tree's memory now, bytes (see :func:`memory_bytes`)."""
        return memory_bytes(self.tree_pids())

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's stdout/stderr (and nginx's error log)."""
        texts = []
        for path in (self.log_path, self.workdir / "logs" / "error.log"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join("\n".join(t.splitlines()[-lines:]) for t in texts if t)

    def stop(self) -> None:
        """Kill the whole process group, then any straggler of the tree; wait (bounded)."""
        tree = self.tree_pids()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(_alive(p) for p in tree[1:]):
            threading.Event().wait(0.02)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class ServerStartError(RuntimeError):
    pass


def start_server(name: str, workdir: Path, *, attempts: int = 3) -> RealServer:
    """Start server ``name`` on a free ephemeral port, its files in ``workdir``; return once it
    answers one request of its protocol and its tree has all its processes.

    A port taken between :func:`free_port` and the server's bind is retried (``attempts``
    times).  Raises :class:`ServerStartError` with the log's tail when it does not come up
    within :data:`START_TIMEOUT`.
    """
    spec = SERVERS[name]
    reason = missing(name)
    if reason:
        raise ServerStartError(reason)
    errors = []
    for attempt in range(attempts):
        port = free_port()
        run_dir = workdir / f"{name}-{attempt}"
        run_dir.mkdir(parents=True, exist_ok=True)
        if spec.setup is not None:
            spec.setup(port, run_dir)
        log_path = run_dir / "server.log"
        env = {**os.environ, **spec.env}
        env.pop("COVERAGE_PROCESS_START", None)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                spec.argv(port, run_dir), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=run_dir, env=env, start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509  (the point: die with us)
            )
        server = RealServer(spec, port, proc, run_dir, log_path)
        problem = _wait_ready(server)
        if problem is None:
            return server
        server.stop()
        errors.append(f"attempt {attempt + 1} on port {port}: {problem}\n"
                      f"--- log tail ---\n{server.log_tail()}")
        if "in use" not in server.log_tail().lower():
            break
    raise ServerStartError(f"{name} did not start:\n" + "\n".join(errors))


def _wait_ready(server: RealServer) -> str | None:
    deadline = time.monotonic() + START_TIMEOUT
    served = False
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return f"exited with status {server.proc.returncode}"
        if not served:
            served = exchange(server.address, server.protocol, timeout=1.0) is not None
        if served and len(server.tree_pids()) >= server.spec.procs:
            return None
        threading.Event().wait(0.05)
    return (f"not ready within {START_TIMEOUT:.0f} s (answered a request: {served}; "
            f"processes {len(server.tree_pids())} of {server.spec.procs})")


@contextlib.contextmanager
def running(name: str, workdir: Path) -> Iterator[RealServer]:
    """:func:`start_server` as a context manager: the server is stopped on the way out."""
    server = start_server(name, workdir)
    try:
        yield server
    finally:
        server.stop()
