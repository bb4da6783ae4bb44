"""The tutorial's programs as subprocesses, checked line by line against its sample session."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 20


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


class ServerProcess:
    """``multiconn-server.py 127.0.0.1 0`` with a bounded line reader."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(EXAMPLES / "multiconn-server.py"), "127.0.0.1", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.remaining_out = ""
        # A reader thread, because a text pipe buffers lines that select() no longer sees.
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def readline(self, timeout: float = TIMEOUT) -> str:
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"the server printed nothing for {timeout}s; so far: {self.lines}"
            ) from None
        if line is None:
            raise AssertionError(f"the server exited; it printed: {self.lines}")
        self.lines.append(line)
        return line

    def read_until(self, predicate: re.Pattern[str], count: int) -> list[str]:
        deadline = time.monotonic() + TIMEOUT
        matched: list[str] = []
        while len(matched) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"expected {count} lines like {predicate.pattern}: {self.lines}"
                )
            line = self.readline(remaining)
            if predicate.fullmatch(line):
                matched.append(line)
        return matched

    def interrupt(self) -> tuple[int, list[str], str]:
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(timeout=TIMEOUT)
        self.reader.join(TIMEOUT)
        while (line := self.queue.get_nowait()) is not None:
            self.lines.append(line)
        assert self.proc.stderr is not None
        return status, self.lines, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self.reader.join(TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    ("script", "usage"),
    [
        ("multiconn-server.py", "Usage: multiconn-server.py <host> <port>"),
        ("multiconn-client.py", "Usage: multiconn-client.py <host> <port> <num_connections>"),
    ],
)
def test_usage_lines_without_arguments(script: str, usage: str) -> None:
    result = run(script)
    assert result.stdout.strip() == usage
    assert result.returncode == 2


def test_the_tutorials_sample_session() -> None:
    server = ServerProcess()
    try:
        listening = server.readline()
        match = re.fullmatch(r"Listening on \('127\.0\.0\.1', (\d+)\)", listening)
        assert match, listening
        port = match.group(1)

        client = run("multiconn-client.py", "127.0.0.1", port, "2")
        assert client.returncode == 0, client.stderr
        addr = re.escape(f"('127.0.0.1', {port})")
        lines = client.stdout.splitlines()
        assert re.fullmatch(rf"Starting connection 1 to {addr}", lines[0])
        assert re.fullmatch(rf"Starting connection 2 to {addr}", lines[1])
        for n in (1, 2):
            mine = [line for line in lines if line.endswith(f"connection {n}")]
            assert mine[:2] == [
                f"Sending b'Message 1 from client.' to connection {n}",
                f"Sending b'Message 2 from client.' to connection {n}",
            ]
            assert mine[-1] == f"Closing connection {n}"
            received = "".join(
                re.fullmatch(rf"Received b'(.*)' from connection {n}", line).group(1)  # type: ignore[union-attr]
                for line in mine[2:-1]
            )
            assert received == "Message 1 from client.Message 2 from client."

        peer = r"\('127\.0\.0\.1', \d+\)"
        accepted = server.read_until(re.compile(rf"Accepted connection from {peer}"), 2)
        closing = server.read_until(re.compile(rf"Closing connection to {peer}"), 2)
        assert sorted(line.split("from ")[1] for line in accepted) == sorted(
            line.split("to ")[1] for line in closing
        )
        echoed = "".join(
            m.group(1)
            for line in server.lines
            if (m := re.fullmatch(rf"Echoing b'(.*)' to {peer}", line))
        )
        assert len(echoed) == 2 * len("Message 1 from client.Message 2 from client.")

        status, out, err = server.interrupt()
        assert status == 0, err
        assert out[-1] == "Caught keyboard interrupt, exiting"
        assert "Traceback" not in err
    finally:
        server.kill()


def test_echo_client_snippet() -> None:
    server = ServerProcess()
    try:
        port = re.findall(r"\d+", server.readline())[-1]
        result = run("echo-client.py", "127.0.0.1", port)
        assert result.stdout.strip() == "Received b'Hello, world'"
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1", "not-a-port"], "port must be an integer"),
        (["10.1.2.3", "0"], "not a loopback address"),
    ],
)
def test_server_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = run("multiconn-server.py", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_client_bad_count_is_one_line() -> None:
    result = run("multiconn-client.py", "127.0.0.1", "1", "lots")
    assert result.returncode == 2
    assert "num_connections must be a positive integer" in result.stderr
    assert "Traceback" not in result.stderr
