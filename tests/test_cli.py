"""The ``multiconn`` command, in-process through ``main(argv)``."""

from __future__ import annotations

import os
import re
import socket
import threading

import pytest

from pytest_multiconn import EchoServer
from pytest_multiconn.cli import main
from pytest_multiconn.cli.tutorial import printer, serve


def test_client_prints_the_tutorial_lines(
    multiconn_server: EchoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = multiconn_server.address
    assert main(["client", host, str(port), "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    addr = repr((host, port))
    assert lines[:2] == [f"Starting connection 1 to {addr}", f"Starting connection 2 to {addr}"]
    for n in (1, 2):
        assert f"Sending b'Message 1 from client.' to connection {n}" in lines
        assert f"Sending b'Message 2 from client.' to connection {n}" in lines
        assert f"Closing connection {n}" in lines
        received = b"".join(
            eval(m.group(1))  # noqa: S307 - the repr of bytes we printed ourselves
            for line in lines
            if (m := re.fullmatch(rf"Received (b'.*') from connection {n}", line))
        )
        assert received == b"Message 1 from client.Message 2 from client."


def test_client_against_a_closed_port_fails_with_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        status = main(["client", "127.0.0.1", str(holder.getsockname()[1]), "1", "--timeout", "5"])
    assert status == 1
    assert "refused" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["server", "127.0.0.1", "http"], "port must be an integer from 0 to 65535, got 'http'"),
        (["server", "127.0.0.1", "70000"], "port must be an integer from 0 to 65535"),
        (["server", "8.8.8.8", "0"], "not a loopback address"),
        (["client", "127.0.0.1", "1", "many"], "num_connections must be a positive integer"),
        (["client", "127.0.0.1", "1", "0"], "num_connections must be a positive integer"),
        (["client", "127.0.0.1", "1", "1", "--timeout", "-1"], "positive number of seconds"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("multiconn: error:"), err
    assert message in err
    assert len(err.splitlines()) == 1, "one line, never a traceback"


def test_port_in_use_is_one_line_and_status_2(
    multiconn_server: EchoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["server", "127.0.0.1", str(multiconn_server.port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"127.0.0.1:{multiconn_server.port} is already in use" in err
    assert len(err.splitlines()) == 1


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "server" in capsys.readouterr().out


def test_demo_runs_the_tutorial_session(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--connections", "3", "--no-suite"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Listening on \('127\.0\.0\.1', \d+\)", out)
    assert out.count("Accepted connection from") == 3
    assert "OK: 3/3 connections echoed exactly" in out


def test_serve_prints_server_lines_and_stops_on_event() -> None:
    lines: list[str] = []
    listening = threading.Event()
    stop = threading.Event()

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("Listening on"):
            listening.set()

    result: list[EchoServer] = []
    thread = threading.Thread(
        target=lambda: result.append(serve("127.0.0.1", 0, out=out, stop=stop))
    )
    thread.start()
    try:
        assert listening.wait(10), "the server never printed its Listening line"
        port = int(re.findall(r"\d+", lines[0])[-1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert any(line.startswith("Accepted connection from ('127.0.0.1', ") for line in lines)
    assert any(line.startswith("Echoing b'ping' to ('127.0.0.1', ") for line in lines)
    assert result[0].stats().bytes_out == 4
    printer()("printer writes whole lines")  # the shared printer is line-buffered


def test_server_ca_out_that_cannot_be_written_names_the_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Before: a bare "[Errno 5] Input/output error" without the path.
    assert main(["server", "127.0.0.1", "0", "--tls", "--ca-out", "/proc/version"]) == 2
    err = capsys.readouterr().err
    assert "--ca-out '/proc/version': cannot write the CA certificate there" in err


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"multiconn {version('pytest-multiconn')}"


def _commands() -> list[str]:
    import argparse

    from pytest_multiconn.cli import build_parser

    parser = build_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    return sorted(subparsers.choices)


def test_the_help_check_covers_every_command() -> None:
    assert {"server", "client", "demo", "proxy", "suite", "toxiproxy-server"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_option_of_every_command_has_help(command: str) -> None:
    import argparse

    from pytest_multiconn.cli import build_parser

    parser = build_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    sub = subparsers.choices[command]
    missing = [
        a.option_strings[0] if a.option_strings else a.dest
        for a in sub._actions
        if not a.help or a.help == argparse.SUPPRESS
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--seed", "-5"], "a seed is a non-negative integer, got '-5'"),
        (["demo", "--connections", "0"], "expected a positive integer, got '0'"),
        (["server", "127.0.0.1", "0", "--max-connections", "x"], "positive integer, got 'x'"),
    ],
)
def test_bad_numbers_are_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "invalid" not in err


_LONG_RUNNING = {
    "server": (["server", "127.0.0.1", "0"], "Listening on"),
    "proxy": (["proxy", "127.0.0.1", "0", "127.0.0.1", "9"], "proxy listening on"),
    "toxiproxy-server": (["toxiproxy-server", "--port", "0", "--quiet"], "toxiproxy API on"),
}


@pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals")
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", sorted(_LONG_RUNNING))
def test_long_running_commands_stop_on_a_signal_even_with_sigint_ignored(
    command: str, signame: str
) -> None:
    # Started as a background job of a shell script (`multiconn proxy ... &`) is: SIGINT
    # ignored.  Each command must still stop on SIGINT and on SIGTERM, cleanly (exit 0).
    import signal
    import subprocess
    import sys

    argv, first_line = _LONG_RUNNING[command]
    code = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "os.execv(sys.executable, [sys.executable, '-u', '-m', 'pytest_multiconn', "
        f"*{argv!r}])"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(first_line), (line, proc.stderr and proc.stderr.read())
            proc.send_signal(getattr(signal, signame))
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=20)
    assert proc.returncode == 0, err
    if command == "proxy":
        assert "proxied 0 connections" in out
    if command == "server" and signame == "SIGINT":
        assert "Caught keyboard interrupt, exiting" in out  # the tutorial's line


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("substitute:pattern=hello,replacement=HELLO",
         "Substitute(pattern=b'hello', replacement=b'HELLO')"),
        (r"substitute:pattern=a\,b,replacement=\x00\r\n",
         r"Substitute(pattern=b'a,b', replacement=b'\x00\r\n')"),
        ("corrupt:offsets=0;17", "Corrupt(offsets=(0, 17))"),
        ("truncate:bytes=3,every=2", "Truncate(bytes=3, every=2)"),
        ("coalesce:bytes=10", "Coalesce(bytes=10)"),
    ],
)
def test_fault_values_are_read_by_the_parameters_type(spec: str, expected: str) -> None:
    from pytest_multiconn.cli.proxy import parse_fault

    toxic, add = parse_fault(spec)
    assert repr(toxic) == expected
    assert add == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (r"substitute:pattern=bad\x4", r"pattern: bad escape in 'bad\\x4'"),
        ("corrupt:offsets=x", "offsets must be a tuple of distinct integers"),
    ],
)
def test_bad_fault_values_name_the_parameter(spec: str, message: str) -> None:
    from pytest_multiconn.cli.proxy import parse_fault
    from pytest_multiconn.errors import FaultParameterError

    with pytest.raises(FaultParameterError, match=re.escape(message)):
        parse_fault(spec)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("PING\\r\\n", b"PING\r\n"), ("a\\x00b", b"a\x00b"), ("ü", "ü".encode()),
     ("€", "€".encode()), ("back\\\\slash", b"back\\slash")],
)
def test_escaped_text_to_bytes(text: str, expected: bytes) -> None:
    from pytest_multiconn.core.escapes import unescape

    assert unescape(text) == expected


def test_suite_send_takes_non_latin1_text() -> None:
    # Before: --send '€' crashed with UnicodeEncodeError inside the escape decoding.
    from pytest_multiconn.cli.suite import _unescape

    assert _unescape("€\\n") == "€\n".encode()


def test_server_exits_quietly_when_its_stdout_goes_away() -> None:
    # `multiconn server 127.0.0.1 0 | head -1`: once head exits, the next line meets EPIPE.
    # The command must end by itself, as command-line tools do, with no traceback.
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(
        [sys.executable, "-m", "pytest_multiconn", "server", "127.0.0.1", "0"],
        stdout=subprocess.PIPE, stderr=err, text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.match(r"Listening on \('127\.0\.0\.1', (\d+)\)", line)
            assert match, line
            proc.stdout.close()  # what `head -1` does after its line
            # A client makes the server print ("Accepted connection ..."): into the closed pipe.
            with socket.create_connection(("127.0.0.1", int(match[1])), timeout=20) as sock:
                sock.sendall(b"x")
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pytest.fail("the server lives on after its stdout went away")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=20)
        err.seek(0)
        stderr = err.read()
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert stderr == "", stderr
    assert proc.returncode == 141  # as a shell reports a tool killed by SIGPIPE
