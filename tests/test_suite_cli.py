"""``multiconn suite`` from a shell: the flags a protocol needs, usage errors for flags that do
not apply (exit 2, one line, never silently ignored), the replay line, and the reports."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_multiconn import EchoServer
from pytest_multiconn.cli import main
from pytest_multiconn.core.wait import wait_until


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """A loopback EchoServer's port for the module; stopped at teardown."""
    with EchoServer() as server:
        yield server.port


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--protocol", "http", "--expect", "x"], "--expect does not apply to --protocol http"),
        (["--expect-status", "404"], "--expect-status is for --protocol http"),
        (["--expect-body", "x"], "--expect-body is for --protocol http"),
        (["--terminator", "END"], "--terminator is for --protocol line"),
        (["--protocol", "redis", "--answers-garbage", "close"], "--answers-garbage is for"),
        (["--only", "burst", "--skip", "burst"], "--only and --skip both name burst"),
        (["--pid", "999999999"], "no such process"),
        (["--pid", "-5"], "expected a positive integer"),
        (["--seed", "-1"], "a seed is a non-negative integer"),
        (["--max-idle-cpu", "nan"], "expected a positive number"),
        (["--burst", "0"], "expected a positive integer"),
        (["--protocol", "line", "--terminator", "END\\r\\n"], "--terminator needs --expect"),
    ],
)
def test_flags_that_do_not_apply_are_usage_errors(
    echo_port: int, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["suite", "127.0.0.1", str(echo_port), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert err.count("\n") == 1  # one line, never a traceback or a usage dump


def test_replay_line_keeps_every_flag_and_reports_are_written(
    echo_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    argv = ["suite", "127.0.0.1", str(echo_port), "--only", "exchange", "--only", "burst",
            "--pid", str(os.getpid()), "--burst", "16", "--max-growth-mib", "48",
            "--seed", "5", "--json", str(tmp_path / "r.json"),
            "--junit-xml", str(tmp_path / "r.xml"), "--html", str(tmp_path / "r.html")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    replay = next(line for line in out.splitlines() if line.startswith("OK") or "replay" in line)
    assert "seed 5" in replay
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r.get("name", r.get("fault")) for r in data["rows"]] == ["exchange", "burst"]
    command = data["command"]
    for flag in ("--pid", "--burst 16", "--max-growth-mib 48.0", "--only exchange",
                 "--only burst", "--seed 5"):
        assert flag in command, command
    assert "<testcase" in (tmp_path / "r.xml").read_text()
    assert "<svg" in (tmp_path / "r.html").read_text()
    assert "time: " in out  # where the time went
    assert "server pids measured:" in out


def test_skip_leaves_a_row_out(echo_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suite", "127.0.0.1", str(echo_port), "--skip", "never_read", "--skip",
                 "half_close", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK: all 10 checks passed" in out
    assert "never_read " not in out


def test_tls_flags_are_in_the_replay_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    from pytest_multiconn.tls import TLSConfig

    tls = TLSConfig()
    cafile = tls.write_ca_cert(tmp_path)
    with EchoServer(tls=tls) as server:
        assert main(["suite", "127.0.0.1", str(server.port), "--tls", "--cafile", str(cafile),
                     "--only", "exchange", "--json", str(tmp_path / "r.json"),
                     "--seed", "1"]) == 0
    command = json.loads((tmp_path / "r.json").read_text())["command"]
    assert "--tls" in command, command
    assert f"--cafile {cafile}" in command, command


def test_memcached_from_a_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """memcached's get needs its key set first (--setup) and a reply that spans lines
    (--terminator); garbage gets ERROR (--answers-garbage, --error-prefix)."""
    exe = shutil.which("memcached")
    if exe is None:
        pytest.skip("memcached is not installed (.ci/run installs it with apt-get)")
    from realservers import free_port

    port = free_port()
    proc = subprocess.Popen([exe, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
            except OSError:
                return False
            return True

        wait_until(up, 10, "memcached to listen")
        rc = main(["suite", "127.0.0.1", str(port), "--protocol", "line", "--delimiter",
                   "\\r\\n", "--send", "get k", "--terminator", "END\\r\\n", "--expect",
                   "VALUE k 0 5\\r\\nhello\\r\\nEND\\r\\n", "--setup",
                   "set k 0 0 5\\r\\nhello\\r\\n", "--answers-garbage", "error,close",
                   "--error-prefix", "ERROR", "--seed", "3"])
    finally:
        proc.kill()
        proc.wait(10)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "answered garbage with" in out
