"""Fixtures for parallel and cross-process runs: a session server per xdist worker, and an
echo server in a child process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_multiconn import ClientResults, EchoServer
from pytest_multiconn.core.process import ServerProcess, ServerProcessError
from pytest_multiconn.lowlevel import wait_until

# -- multiconn_session_server ---------------------------------------------------------------


def test_session_server_is_shared_within_a_worker_only(pytester: pytest.Pytester) -> None:
    out_dir = pytester.mkdir("seen")
    pytester.makepyfile(
        f"""
        import json, os
        import pytest

        @pytest.mark.parametrize("i", range(20))
        def test_use(i, multiconn_session_server, multiconn_client):
            multiconn_client(multiconn_session_server.address, 1).check()
            worker = os.environ["PYTEST_XDIST_WORKER"]
            record = {{"worker": worker, "address": list(multiconn_session_server.address),
                       "thread": multiconn_session_server.loop.thread.name}}
            with open(os.path.join({str(out_dir)!r}, f"{{i}}.json"), "w") as f:
                json.dump(record, f)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=20)
    records = [json.loads(p.read_text()) for p in out_dir.iterdir()]
    assert len(records) == 20
    by_worker: dict[str, set[tuple[str, int]]] = {}
    for r in records:
        by_worker.setdefault(r["worker"], set()).add(tuple(r["address"]))
        assert r["thread"] == f"multiconn-echo[{r['worker']}:session]"
    assert set(by_worker) == {"gw0", "gw1"}
    # One server per worker, and no two workers share one.
    assert all(len(addresses) == 1 for addresses in by_worker.values())
    assert by_worker["gw0"] != by_worker["gw1"]


def test_session_server_fixture(
    multiconn_session_server: EchoServer, multiconn_client: Callable[..., ClientResults]
) -> None:
    before = multiconn_session_server.stats()
    multiconn_client(multiconn_session_server.address, 3).check()
    after = multiconn_session_server.wait_for_closed(before.closed + 3)
    assert after.accepted - before.accepted == 3


# -- multiconn_server_process and ServerProcess ------------------------------------------------


def test_process_server_fixture(
    multiconn_server_process: ServerProcess, multiconn_client: Callable[..., ClientResults]
) -> None:
    assert multiconn_server_process.pid != os.getpid()
    host, port = multiconn_server_process.address
    assert host == "127.0.0.1"
    assert port == multiconn_server_process.port > 0
    multiconn_client(multiconn_server_process.address, 3).check()


def test_process_stops_cleanly_on_sigint() -> None:
    with ServerProcess() as proc, socket.create_connection(proc.address, timeout=5) as sock:
        sock.sendall(b"across the boundary")
        assert sock.recv(100) == b"across the boundary"
    assert proc.killed is False
    assert proc.returncode == 0
    assert "Caught keyboard interrupt, exiting" in proc.output()
    assert "Accepted connection from ('127.0.0.1'," in proc.output()
    assert proc.stop() is True  # idempotent
    assert "exited 0" in repr(proc)


def test_process_that_ignores_sigint_is_killed_and_reported() -> None:
    proc = ServerProcess().start()
    os.kill(proc.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGINT; SIGKILL works
    assert proc.stop(timeout=0.5) is False
    assert proc.killed is True
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(ServerProcessError, match=r"not exit within 0\.5s of SIGINT and was killed"):
        proc.check()


def test_process_that_cannot_start_says_why() -> None:
    proc = ServerProcess("192.0.2.1")  # not loopback: the child refuses to bind it
    with pytest.raises(ServerProcessError, match=r"(?s)exited with status 2.*refusing to bind"):
        proc.start()
    assert proc.returncode == 2
    with pytest.raises(RuntimeError, match="not listening"):
        _ = proc.port


def test_process_crash_is_reported_by_check() -> None:
    proc = ServerProcess().start()
    os.kill(proc.pid, signal.SIGKILL)  # as if it crashed
    assert proc.stop() is True  # it had exited already: nothing to kill
    with pytest.raises(ServerProcessError, match="exited with status -9"):
        proc.check()


def test_process_misuse_is_explained() -> None:
    proc = ServerProcess()
    assert repr(proc) == "<ServerProcess not started>"
    with pytest.raises(RuntimeError, match="not started"):
        _ = proc.pid
    with pytest.raises(ValueError, match="timeout must be a positive"):
        ServerProcess(timeout=0)
    with proc, pytest.raises(RuntimeError, match="already started"):
        proc.start()


def test_process_fixture_fails_the_test_when_it_had_to_kill(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, signal

        def test_freeze(multiconn_server_process):
            os.kill(multiconn_server_process.pid, signal.SIGSTOP)
            multiconn_server_process.timeout = 0.5  # the bound on stop(); start() is done
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ServerProcessError*was killed; its output:*"])


def test_coverage_measures_the_child_process(tmp_path: Path) -> None:
    """``patch = ["subprocess"]`` makes coverage follow the fixture's child process."""
    pytest.importorskip("coverage")
    (tmp_path / ".coveragerc").write_text(
        textwrap.dedent(
            """
            [run]
            branch = true
            parallel = true
            source = pytest_multiconn
            patch = subprocess
            """
        )
    )
    (tmp_path / "test_child.py").write_text(
        textwrap.dedent(
            """
            def test_it(multiconn_server_process, multiconn_client):
                multiconn_client(multiconn_server_process.address, 1).check()
            """
        )
    )
    # Measure only this run: drop settings an outer `coverage run` may have exported.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    run = [sys.executable, "-m", "coverage"]
    # A measured child starts slowly on a loaded machine: give it more than the default 10 s.
    inner = subprocess.run(
        [*run, "run", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--multiconn-timeout=60",
         "test_child.py"],
        cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=180,
    )
    assert inner.returncode == 0, inner.stdout + inner.stderr
    data_files = list(tmp_path.glob(".coverage.*"))
    assert len(data_files) >= 2, "expected data files from the test process and the child"
    subprocess.run([*run, "combine"], cwd=tmp_path, env=env, check=True, capture_output=True,
                   timeout=60)
    subprocess.run([*run, "json", "-o", "cov.json"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=60)
    files = json.loads((tmp_path / "cov.json").read_text())["files"]
    tutorial = next(v for k, v in files.items() if k.endswith("cli/tutorial.py"))
    cli = next(v for k, v in files.items() if k.endswith("cli/__init__.py"))
    # Only the child runs the tutorial server: its lines are covered only if it was measured.
    serve = tutorial["functions"]["serve_until_interrupted"]
    assert serve["summary"]["covered_lines"] > 0
    assert cli["functions"]["_run_server"]["summary"]["covered_lines"] > 0


# -- the child dies with its parent (issue 22, item 13) ---------------------------------------

_ORPHANING_PARENT = textwrap.dedent(
    """
    import os, socket, sys, threading
    from pytest_multiconn.core.process import ServerProcess

    box = []
    if sys.argv[1] == "thread":
        # Started from a thread that ends before the parent: only the pipe can tell the
        # child, and the thread's end must not stop it.
        worker = threading.Thread(target=lambda: box.append(ServerProcess().start()))
        worker.start()
        worker.join()
    else:
        box.append(ServerProcess().start())
    proc = box[0]
    socket.create_connection(proc.address, timeout=10).close()  # still serving
    print(proc.pid, proc.port, flush=True)
    os._exit(0)  # no stop(), no atexit, no finally: as a crash or a hard timeout would
    """
)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}  # a zombie nobody reaped yet is gone as a server


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_process_child_exits_when_its_parent_dies(started_from: str) -> None:
    parent = subprocess.run(
        [sys.executable, "-c", _ORPHANING_PARENT, started_from],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert parent.returncode == 0, parent.stderr
    pid, port = (int(x) for x in parent.stdout.split())
    try:
        # A bounded poll on another process: nothing to wait on.
        wait_until(lambda: _gone(pid) and _refuses(port), 20,
                   f"server process {pid} (port {port}) to end after its parent exited")
    finally:
        if not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
