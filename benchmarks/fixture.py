"""Per-test cost of a function-scoped ``multiconn_server``, as a user's wall clock sees it.

    python benchmarks/fixture.py [--quick] [--tests N] [--rounds N] [--cache warm|none]
                                 [--breakdown] [--baselines] [--json FILE]

It writes a throw-away test project (a temporary directory, removed at the end) and runs each
test file in a fresh ``python -m pytest -q -p no:cacheprovider`` subprocess, same plugin set
for every file, round-robin.  The headline figure is **wall time per test**: the wall time of
the file with N tests that each use ``multiconn_server`` and make one 4-byte exchange, minus
the wall time of the file with N empty tests, divided by N; the median over the rounds (3 by
default).  Beside it, the same from the first test's start to the last test's end (without
interpreter start-up and collection: less noisy, same per-test content), and the figures
pytest itself reports (``report.duration`` of the
setup, call and teardown phases, median per test, minus the empty test's), which leave out
what happens between the phases (reporting, hooks, garbage collection).  Each file is run
once untimed first, so imports and bytecode compilation are not in the figures.

Variants:
  empty        ``def test(i): pass``
  bare         the same file with ``-p no:multiconn``: the empty test's figures minus these
               are what the plugin costs a test that uses none of it (printed below the table)
  server       ``def test(i, multiconn_server): ...`` (started and stopped per test)
  exchange     the same, plus one client connection that sends 4 bytes, reads them back, closes
  httpserver   pytest-httpserver's ``HTTPServer`` started and stopped by a function-scoped
               fixture (its own ``httpserver`` fixture is session-scoped; a per-test server is
               what a test needs for isolation), fewer tests; ``--httpserver`` to include it

``--baselines`` adds two fixtures of the test's own, which the fixture without traffic
(``server``) is compared with (ratios of the same rounds are printed):
  noop_fixture   a function-scoped generator fixture that yields None: pytest's own work for
                 any fixture
  socket_fixture one that binds and listens a loopback socket and closes it at teardown
and the same exchange against servers that live for the whole session, so the exchange's own
cost can be told from the fixture's:
  session      our ``EchoServer`` in a session-scoped fixture
  socketserver a hand-written ``socketserver.ThreadingTCPServer`` echo session fixture (what a
               project writes without us; a thread per connection)
  floor        the least any CPython server thread can do for this exchange: one thread,
               blocking ``accept``, ``recv``, ``sendall``, no selector, no bookkeeping
  floor_c      the same loop in C (a ``pthread`` that never takes the GIL; built with ``cc``
               into the throw-away project, left out when there is no compiler)

Beside the wall time, **median per test**: the median over the tests of one test's start to
finish (``pytest_runtest_logstart`` to ``logfinish``), minus the empty test's: what each further
test costs, without the one-time import of the package on the first fixture use, which the
wall-time figure spreads over the N tests.

Bytecode: ``--cache warm`` (the default) lets Python write bytecode, as it does by default,
into a temporary ``PYTHONPYCACHEPREFIX``; ``--cache none`` runs with
``PYTHONDONTWRITEBYTECODE=1``, where pytest rewrites and compiles every plugin module it
imports at every start (the package's first-use import then costs several times more).

``--breakdown`` adds one more (untimed) run of the exchange file with perf_counter wrappers
around the fixture's steps (Loop.__init__, Thread.start, the ready-event waits, bind, stop,
join, the pytest phases) and prints milliseconds per test for each; ``--pin CPU`` runs every
pytest under ``taskset -c CPU`` (the loop thread then shares the test's CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, ROOT, fmt, machine_note

CONFTEST = '''
import json, os, time

_durations = {}


_span = []
_starts = {}
_each = []


def pytest_runtest_logstart(nodeid, location):
    _starts[nodeid] = time.perf_counter()
    if not _span:
        _span.append(_starts[nodeid])


def pytest_runtest_logreport(report):
    _durations.setdefault(report.nodeid, {})[report.when] = report.duration


def pytest_runtest_logfinish(nodeid, location):
    _span[1:] = [time.perf_counter()]
    _each.append(_span[1] - _starts.pop(nodeid))


def pytest_sessionfinish(session):
    with open(os.environ["MULTICONN_BENCH_OUT"], "w") as f:
        json.dump({"durations": _durations, "span": _span[-1] - _span[0], "each": _each}, f)


if os.environ.get("MULTICONN_BENCH_BREAKDOWN"):
    import collections, selectors, socket, sys, threading, time

    import pytest
    from pytest_multiconn.core import loop as _loop, server as _server

    _T = collections.defaultdict(float)
    _N = collections.Counter()

    def _wrap(owner, name, key):
        original = getattr(owner, name, None)
        if original is None:  # renamed or moved: time the rest, say what is missing
            _T[f"(not found: {name})"] += 0.0
            return

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _T[key] += time.perf_counter() - t0
                _N[key] += 1

        setattr(owner, name, timed)

    # EchoServer lives in servers/ now; its start and stop are ServerBase's.
    _wrap(_server.ServerBase, "start", "EchoServer.start")
    _wrap(_server, "bind_listener", "  bind_listener")
    _wrap(_loop.Loop, "__init__", "  Loop.__init__")
    _wrap(selectors, "DefaultSelector", "    DefaultSelector()")
    _wrap(socket, "socketpair", "    socketpair()")
    _wrap(_loop.Loop, "start", "  Loop.start")
    _wrap(threading.Thread, "start", "    Thread.start (returns when the thread runs)")
    _wrap(_server.ServerBase, "stop", "EchoServer.stop")
    try:  # the shared loop thread of function-scoped servers (absent in older versions)
        from pytest_multiconn.core import shared as _shared
    except ImportError:
        _shared = None
    if _shared is not None:
        _wrap(_shared.SharedLoop, "acquire", "  SharedLoop.acquire")
        _wrap(_shared.SharedLoop, "release", "  SharedLoop.release")
    _wrap(_loop.Loop, "run_sync", "    Loop.run_sync")
    _wrap(_loop.Loop, "stop", "  Loop.stop")
    _wrap(threading.Thread, "join", "    Thread.join")
    _event_wait = threading.Event.wait

    def _timed_wait(self, timeout=None):
        t0 = time.perf_counter()
        try:
            return _event_wait(self, timeout)
        finally:
            caller = sys._getframe(1).f_code
            key = f"      Event.wait in {caller.co_name} ({os.path.basename(caller.co_filename)})"
            _T[key] += time.perf_counter() - t0
            _N[key] += 1

    threading.Event.wait = _timed_wait

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        t0 = time.perf_counter()
        yield
        _T["runtest_protocol (whole test)"] += time.perf_counter() - t0

    for _phase in ("setup", "call", "teardown"):
        def _hook(item, _phase=_phase):
            t0 = time.perf_counter()
            yield
            _T[f"phase {_phase}"] += time.perf_counter() - t0
        globals()[f"pytest_runtest_{_phase}"] = pytest.hookimpl(hookwrapper=True)(_hook)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(config):
        with open(os.environ["MULTICONN_BENCH_BREAKDOWN"], "w") as f:
            json.dump({k: [_T[k], _N[k]] for k in _T}, f)
'''

def exchange(address: str) -> str:
    """The one client exchange every exchange variant makes (4 bytes out, 4 back, closed), as
    the body of a test whose server is at ``address``."""
    return f"""    with socket.create_connection({address}, timeout=10) as sock:
        sock.sendall(b"ping")
        got = b""
        while len(got) < 4:
            chunk = sock.recv(64)
            assert chunk, "server closed early"
            got += chunk
    assert got == b"ping"
"""


TESTS = {
    "empty": '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_empty(i):
    pass
''',
    "server": '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_server(i, multiconn_server):
    assert multiconn_server.port
''',
    "exchange": '''
import socket
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_exchange(i, multiconn_server):
''' + exchange("multiconn_server.address"),
    "httpserver": '''
import pytest
from pytest_httpserver import HTTPServer

@pytest.fixture
def fn_httpserver():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()

@pytest.mark.parametrize("i", range({n}))
def test_httpserver(i, fn_httpserver):
    assert fn_httpserver.port
''',
    "noop_fixture": '''
import pytest

@pytest.fixture
def noop():
    yield None

@pytest.mark.parametrize("i", range({n}))
def test_noop_fixture(i, noop):
    pass
''',
    "socket_fixture": '''
import socket
import pytest

@pytest.fixture
def listening():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    yield sock
    sock.close()

@pytest.mark.parametrize("i", range({n}))
def test_socket_fixture(i, listening):
    assert listening.getsockname()[1]
''',
    "session": '''
import socket
import pytest
from pytest_multiconn import EchoServer

@pytest.fixture(scope="session")
def session_server():
    with EchoServer() as server:
        yield server.address

@pytest.mark.parametrize("i", range({n}))
def test_session(i, session_server):
''' + exchange("session_server"),
    "socketserver": '''
import socket
import socketserver
import threading
import pytest

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True

@pytest.fixture(scope="session")
def socketserver_echo():
    server = Server(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()
    thread.join(10)

@pytest.mark.parametrize("i", range({n}))
def test_socketserver(i, socketserver_echo):
''' + exchange("socketserver_echo"),
    "floor": '''
import socket
import threading
import pytest

@pytest.fixture(scope="session")
def floor_server():
    listener = socket.create_server(("127.0.0.1", 0))
    def serve():
        while True:
            conn, _ = listener.accept()
            with conn:
                if conn.recv(1, socket.MSG_PEEK) == b"Q":
                    return
                while data := conn.recv(65536):
                    conn.sendall(data)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    with socket.create_connection(listener.getsockname(), timeout=10) as stop:
        stop.sendall(b"Q")
    thread.join(10)
    listener.close()

@pytest.mark.parametrize("i", range({n}))
def test_floor(i, floor_server):
''' + exchange("floor_server"),
    "floor_c": '''
import ctypes
import pathlib
import socket
import pytest

@pytest.fixture(scope="session")
def floor_c_server():
    lib = ctypes.CDLL(str(pathlib.Path(__file__).with_name("libfloor.so")))
    port = lib.floor_start()
    assert port > 0, "the C server did not start"
    yield ("127.0.0.1", port)  # its thread ends with the process

@pytest.mark.parametrize("i", range({n}))
def test_floor_c(i, floor_c_server):
''' + exchange("floor_c_server"),
}

# The floor_c server: accept, echo until end of stream, close, forever, in a thread that
# never takes the GIL.
FLOOR_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static int listener;
static void *serve(void *unused) {
    static char buf[65536];
    (void)unused;
    for (;;) {
        int conn = accept(listener, 0, 0);
        if (conn < 0) return 0;
        for (;;) {
            ssize_t n = read(conn, buf, sizeof buf);
            if (n <= 0 || write(conn, buf, (size_t)n) != n) break;
        }
        close(conn);
    }
}
int floor_start(void) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    pthread_t thread;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 128)
        || getsockname(listener, (struct sockaddr *)&a, &len)) return -1;
    if (pthread_create(&thread, 0, serve, 0)) return -1;
    pthread_detach(thread);
    return ntohs(a.sin_port);
}
"""

#: The baselines' variants and the exchange they are compared with.
BASELINES = ["session", "socketserver", "floor", "floor_c"]
#: The baselines of the fixture without traffic (``server``), and what it is compared with.
FIXTURE_BASELINES = ["noop_fixture", "socket_fixture"]


def build_floor_c(project: Path) -> str | None:
    """Compile the C floor into ``project``; None if it was built, else why not."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (cc): no floor_c baseline"
    (project / "floor.c").write_text(FLOOR_C)
    proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(project / "libfloor.so"),
                           str(project / "floor.c"), "-lpthread"],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        return f"cc failed, no floor_c baseline: {proc.stderr.strip()[:200]}"
    return None


def have_httpserver() -> bool:
    try:
        import pytest_httpserver  # noqa: F401 - only probing whether it is installed
    except ImportError:
        return False
    return True


def run_variant(project: Path, variant: str, pin: int | None = None,
                breakdown: Path | None = None, cache: str = "warm") -> dict[str, Any]:
    out = project / f"{variant}.json"
    env = dict(os.environ, MULTICONN_BENCH_OUT=str(out), PYTHONPATH=str(ROOT / "src"))
    if cache == "warm":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(project / "pycache")
    else:
        env.pop("PYTHONPYCACHEPREFIX", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("MULTICONN_BENCH_BREAKDOWN", None)
    if breakdown is not None:
        env["MULTICONN_BENCH_BREAKDOWN"] = str(breakdown)
    # "bare": the empty tests with the plugin turned off, for what the plugin costs a test
    # that uses none of it.
    test_file = "test_empty.py" if variant == "bare" else f"test_{variant}.py"
    cmd = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file]
    if variant == "bare":
        cmd[3:3] = ["-p", "no:multiconn"]
    if pin is not None:
        cmd = ["taskset", "-c", str(pin), *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}: pytest exited {proc.returncode}:\n{proc.stdout[-2000:]}")
    data = json.loads(out.read_text())
    durations = data["durations"]
    phases = {ph: statistics.median(d.get(ph, 0.0) for d in durations.values())
              for ph in ("setup", "call", "teardown")}
    return {
        "tests": len(durations),
        "wall": wall,
        "span": data["span"],
        "phases": phases,
        "median_in_process": statistics.median(sum(d.values()) for d in durations.values()),
        # The first quartile of each test's whole protocol (start to finish, reporting
        # included): on a loaded machine the tests a busy neighbour slowed are in the top
        # quartiles, so this moves far less than the means above.
        "p25": statistics.quantiles(data["each"], n=4)[0],
        "p50": statistics.median(data["each"]),
    }


def write_project(project: Path, variants: list[str], n: int, n_http: int,
                  notes: list[str]) -> None:
    """The conftest and one test file per variant (``variants`` loses floor_c if it cannot
    be built, and ``notes`` says why)."""
    (project / "conftest.py").write_text(CONFTEST)
    if "floor_c" in variants:
        why = build_floor_c(project)
        if why is not None:
            variants.remove("floor_c")
            notes.append(why)
    for v in variants:
        if v == "bare":
            continue  # runs test_empty.py
        count = n_http if v == "httpserver" else n
        (project / f"test_{v}.py").write_text(
            textwrap.dedent(TESTS[v]).replace("{n}", str(count)))


def run(n: int, rounds: int = 3, n_http: int = 0, *, breakdown: bool = False,
        pin: int | None = None, cache: str = "warm", baselines: bool = False,
        log: Any = print) -> dict[str, Any]:
    variants = ["empty", "bare", "server", "exchange"]
    if baselines:
        variants += FIXTURE_BASELINES + BASELINES
    notes = []
    if n_http:
        if have_httpserver():
            variants.append("httpserver")
        else:
            notes.append("pytest-httpserver is not installed (pip install -e '.[bench]'): "
                         "no httpserver comparison")
    if pin is not None and shutil.which("taskset") is None:
        raise RuntimeError("--pin needs taskset (util-linux)")
    rounds_out: list[dict[str, Any]] = []
    bd: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="multiconn-fixture-bench-") as tmp:
        project = Path(tmp)
        write_project(project, variants, n, n_http, notes)
        for v in variants:  # untimed: imports, bytecode, the page cache
            run_variant(project, v, pin, cache=cache)
        for r in range(rounds):
            res = {}
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                res[v] = run_variant(project, v, pin, cache=cache)
                log(f"  fixture   {v:10} round {r + 1}/{rounds}: wall {res[v]['wall']:.2f} s "
                    f"for {res[v]['tests']} tests")
            rounds_out.append(res)
        if breakdown:
            path = project / "breakdown.json"
            run_variant(project, "exchange", pin, breakdown=path, cache=cache)
            raw = json.loads(path.read_text())
            bd = {k: {"ms_per_test": t / n * 1e3, "calls": c} for k, (t, c) in raw.items()}
    wall_ms: dict[str, float] = {}
    span_ms: dict[str, float] = {}
    phase_ms: dict[str, dict[str, float]] = {}
    p25_ms: dict[str, float] = {}
    p50_ms: dict[str, float] = {}
    for v in variants:
        if v in ("empty", "bare"):
            continue
        count = n_http if v == "httpserver" else n
        per_round = [(res[v]["wall"] / count - res["empty"]["wall"] / n) * 1e3
                     for res in rounds_out]
        wall_ms[v] = statistics.median(per_round)
        span_ms[v] = statistics.median(
            (res[v]["span"] / count - res["empty"]["span"] / n) * 1e3 for res in rounds_out)
        p25_ms[v] = statistics.median(
            (res[v]["p25"] - res["empty"]["p25"]) * 1e3 for res in rounds_out)
        p50_ms[v] = statistics.median(
            (res[v]["p50"] - res["empty"]["p50"]) * 1e3 for res in rounds_out)
        phase_ms[v] = {ph: statistics.median(
            (res[v]["phases"][ph] - res["empty"]["phases"][ph]) * 1e3 for res in rounds_out)
            for ph in ("setup", "call", "teardown")}
    # What loading the plugin costs a test that uses none of it: the empty test with the
    # plugin minus the same without (-p no:multiconn).
    plugin_ms = {
        "wall": statistics.median(
            (res["empty"]["wall"] - res["bare"]["wall"]) / n * 1e3 for res in rounds_out),
        "median": statistics.median(
            (res["empty"]["p50"] - res["bare"]["p50"]) * 1e3 for res in rounds_out),
    }
    # Same-run ratios: the fixture plus one exchange over the exchange alone against each
    # session-long server, per round (each round runs every file once), then the median.
    ratios = {
        v: statistics.median(
            ((res["exchange"]["p50"] - res["empty"]["p50"])
             / (res[v]["p50"] - res["empty"]["p50"])) for res in rounds_out)
        for v in variants if v in BASELINES
    }
    # The fixture without traffic over a fixture that binds and listens a socket, and what it
    # costs beyond pytest's own work for any function-scoped generator fixture.
    fixture_ratios = {
        v: statistics.median(
            ((res["server"]["p50"] - res["empty"]["p50"])
             / (res[v]["p50"] - res["empty"]["p50"])) for res in rounds_out)
        for v in variants if v in FIXTURE_BASELINES
    }
    beyond_noop = (statistics.median(
        (res["server"]["p50"] - res["noop_fixture"]["p50"]) * 1e3 for res in rounds_out)
        if "noop_fixture" in variants else None)
    return {
        "rounds": rounds_out,
        "server_over_fixture_baseline": fixture_ratios,
        "server_beyond_noop_fixture_ms": beyond_noop,
        "exchange_over_baseline": ratios,
        "plugin_ms_per_unused_test": plugin_ms,
        "wall_ms_per_test": wall_ms,
        "wall_ms_per_test_rounds": {
            v: [(res[v]["wall"] / (n_http if v == "httpserver" else n)
                 - res["empty"]["wall"] / n) * 1e3 for res in rounds_out]
            for v in wall_ms},
        "span_ms_per_test": span_ms,
        "p25_ms_per_test": p25_ms,
        "p50_ms_per_test": p50_ms,
        "cache": cache,
        "in_process_ms": phase_ms,
        "empty_wall_ms_per_test": statistics.median(
            res["empty"]["wall"] / n * 1e3 for res in rounds_out),
        "tests": n,
        "tests_httpserver": n_http,
        "pinned_cpu": pin,
        "breakdown": bd,
        "notes": notes,
    }


_ORDER = ["runtest_protocol", "phase setup", "EchoServer.start", "bind_listener", "Loop.__init__",
          "DefaultSelector()", "socketpair()", "SharedLoop.acquire", "Loop.start", "Thread.start",
          "Event.wait", "phase call", "phase teardown", "EchoServer.stop", "SharedLoop.release",
          "Loop.run_sync", "Loop.stop", "Thread.join"]


def print_report(res: dict[str, Any]) -> None:
    pinned = res["pinned_cpu"]
    print(f"\nper-test cost of a function-scoped multiconn_server (fresh project, {res['tests']} "
          f"tests per file, median of {len(res['rounds'])} rounds; an empty test costs "
          f"{fmt(res['empty_wall_ms_per_test'])} ms of wall time"
          f"{'' if pinned is None else f'; pytest pinned to CPU {pinned}'}; bytecode "
          f"{'cached' if res['cache'] == 'warm' else 'not written'})")
    print(f"  {'variant':10} {'wall/test':>10} {'first..last':>12} {'median':>7} {'p25':>7}   "
          f"phases: {'setup':>7} {'call':>7} {'teardown':>8}   (ms, each minus the empty test's)")
    for v, ms in res["wall_ms_per_test"].items():
        ph = res["in_process_ms"][v]
        rounds = ", ".join(f"{x:.3f}" for x in res["wall_ms_per_test_rounds"][v])
        print(f"  {v:10} {ms:10.3f} {res['span_ms_per_test'][v]:12.3f} "
              f"{res['p50_ms_per_test'][v]:7.3f} {res['p25_ms_per_test'][v]:7.3f}   {'':7} "
              f"{ph['setup']:7.3f} {ph['call']:7.3f} {ph['teardown']:8.3f}   (wall by round: "
              f"{rounds})")
    print("  wall/test: the pytest process's wall time; first..last: from the first test's "
          "start to the last one's end (no start-up or collection); median, p25: median and "
          "first quartile of one test's start to finish (what one more test costs; p25 is "
          "the figure to compare on a loaded machine)")
    plugin = res["plugin_ms_per_unused_test"]
    print(f"  the plugin's own cost on a test that uses none of it (the empty test, minus the "
          f"same with -p no:multiconn): wall {plugin['wall']:.3f}, median "
          f"{plugin['median']:.3f} ms per test")
    if res.get("server_over_fixture_baseline"):
        print("  the fixture without traffic (server, median) over a fixture of the test's own "
              "(median over the rounds of each round's ratio):")
        for v, ratio in res["server_over_fixture_baseline"].items():
            print(f"    over {v:14} {ratio:5.2f}x  ({res['p50_ms_per_test'][v]:.3f} ms median)")
        print(f"    beyond the no-op fixture: {res['server_beyond_noop_fixture_ms']:.3f} ms "
              "median (our start and stop, as pytest's cold caches see them)")
    if res.get("exchange_over_baseline"):
        print("  the fixture plus one exchange (exchange, median) over the same exchange alone "
              "against a server that lives for the session (median over the rounds of each "
              "round's ratio):")
        for v, ratio in res["exchange_over_baseline"].items():
            print(f"    over {v:12} {ratio:5.2f}x  ({res['p50_ms_per_test'][v]:.3f} ms median)")
    if res.get("breakdown"):
        print("\n  where the exchange test's time goes (perf_counter wrappers, one extra run; "
              "ms per test):")
        bd = res["breakdown"]
        # Nesting order (the wrappers' keys are indented by depth), then anything else.
        keys = sorted(bd, key=lambda k: (_ORDER.index(k.strip().split(" (")[0].split(" in ")[0])
                                        if k.strip().split(" (")[0].split(" in ")[0] in _ORDER
                                        else len(_ORDER), k))
        for k in keys:
            calls = f"  ({bd[k]['calls']} calls)" if bd[k]["calls"] else ""
            print(f"    {k:58} {bd[k]['ms_per_test']:7.3f}{calls}")
    for note in res["notes"]:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 tests per file")
    parser.add_argument("--tests", type=int, help="tests per file (default 500; quick 200)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--httpserver", type=int, default=0, metavar="N",
                        help="also N tests with a function-scoped pytest-httpserver")
    parser.add_argument("--cache", choices=("warm", "none"), default="warm",
                        help="bytecode written and cached (warm, Python's default) or "
                        "PYTHONDONTWRITEBYTECODE=1 (none)")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--baselines", action="store_true",
                        help="also the exchange against session-long servers: ours, "
                        "socketserver, the simplest Python thread, the same in C")
    parser.add_argument("--pin", type=int, metavar="CPU")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n = args.tests or (200 if args.quick else 500)
    print(f"machine: {machine_note()}")
    res = run(n, args.rounds, args.httpserver, breakdown=args.breakdown, pin=args.pin,
              cache=args.cache, baselines=args.baselines)
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
