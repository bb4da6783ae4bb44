"""An echo server in a child process, for tests that need a process boundary.

The child is ``python -m pytest_multiconn server HOST 0``: the kernel picks the port and the
child prints the tutorial's ``Listening on ('127.0.0.1', PORT)`` line, which we parse, so
there is no find-a-free-port-then-bind race.  A reader thread drains the child's output for
its whole life (the child prints a line per event; an undrained pipe would fill up and stall
it) and keeps the last lines for error messages.

Coverage measures the child when the parent runs under ``coverage run`` with
``[tool.coverage.run] patch = ["subprocess"]`` (coverage >= 7.10): the child inherits the
settings and writes its own data file when it exits cleanly, which is why ``stop()`` asks
with SIGINT first and kills only as a last resort.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

from pytest_multiconn.core.lifecycle import StartStop
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT
from pytest_multiconn.core.registry import THREAD_PREFIX
from pytest_multiconn.errors import ServerProcessError

_LISTENING = re.compile(r"^Listening on \('(?P<host>[^']+)', (?P<port>\d+)\)")

# Exit statuses of a child that stopped because we asked: 0 (it caught SIGINT or SIGTERM),
# 130 (the shell convention for SIGINT) and -SIGINT (it died of the signal itself).
_CLEAN_EXITS = frozenset({0, 130, -signal.SIGINT, -signal.SIGTERM})


class ServerProcess(StartStop):
    """``python -m pytest_multiconn server HOST 0`` in a child process.

    ``start()`` returns once the child listens; ``address``, ``host``, ``port`` and ``pid``
    are then set.  ``stop()`` sends SIGINT, waits up to ``timeout`` and kills the child only
    if it did not exit; it returns True when the child stopped by itself.  Use ``with``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        args: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        env: dict[str, str] | None = None,
        keep_lines: int = 200,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.command = [sys.executable, "-m", "pytest_multiconn", "server", host, "0", *args]
        self.timeout = timeout
        self.env = env
        self._address: tuple[str, int] | None = None
        self.returncode: int | None = None
        self.killed = False
        self._stop_timeout = timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    def __repr__(self) -> str:
        if self._proc is None:
            state = "not started"
        elif self.returncode is None:
            state = f"pid={self._proc.pid} on {self._address}"
        else:
            killed = " (killed)" if self.killed else ""
            state = f"pid={self._proc.pid} exited {self.returncode}{killed}"
        return f"<ServerProcess {state}>"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("ServerProcess is not started; call start() or use `with`")
        return self._proc.pid

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the child listens on."""
        if self._address is None:
            raise RuntimeError("ServerProcess is not listening; call start() or use `with`")
        return self._address

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    def output(self) -> str:
        """The child's last lines of output (stdout and stderr merged)."""
        return "".join(list(self._lines))

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> ServerProcess:
        """Start the child; return once it printed its listening address."""
        if self._proc is not None:
            raise RuntimeError(f"{self!r} was already started; create a new one")
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"  # the listening line must not wait in a stdio buffer
        # The command is our own interpreter and module; the host is checked by the child.
        self._proc = subprocess.Popen(  # noqa: S603 - no shell, fixed program
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        stdout = self._proc.stdout
        if stdout is None:  # pragma: no cover - stdout=PIPE always makes one
            raise RuntimeError("subprocess.Popen gave no stdout pipe")
        self._reader = threading.Thread(
            target=self._read, args=(stdout,),
            name=f"{THREAD_PREFIX}process-reader-{self._proc.pid}", daemon=True,
        )
        self._reader.start()
        listening = self._listening.wait(self.timeout)
        if not listening or self._address is None:
            exited = self._proc.poll()
            if listening and exited is None:
                # The child closed its output without listening: it is exiting; let it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    exited = self._proc.wait(self.timeout)
            self._terminate()
            what = (f"exited with status {exited}" if exited is not None
                    else f"did not print its address within {self.timeout}s")
            raise ServerProcessError(
                f"server process {' '.join(self.command)!r} {what}; its output:\n"
                f"{self.output() or '(none)'}"
            )
        return self

    def _read(self, stream: IO[str]) -> None:
        # Runs until the child closes its stdout, i.e. exits.
        with stream:
            for line in stream:
                self._lines.append(line)
                if self._address is None:
                    match = _LISTENING.match(line)
                    if match:
                        self._address = (match["host"], int(match["port"]))
                        self._listening.set()
        self._listening.set()  # the child exited before listening: wake start() now

    def stop(self, timeout: float | None = None) -> bool:
        """SIGINT, wait up to ``timeout`` (default: the constructor's), then kill; True if
        the child exited by itself.  Idempotent."""
        proc = self._proc
        if proc is None or self.returncode is not None:
            return not self.killed
        timeout = self.timeout if timeout is None else timeout
        self._stop_timeout = timeout
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            self.returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._terminate()
        self._join_reader()
        return not self.killed

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:  # pragma: no cover - only called after start()
            return
        if proc.poll() is None:
            self.killed = True
            proc.kill()
        self.returncode = proc.wait()
        self._join_reader()

    def _join_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            reader.join(self.timeout)

    def check(self) -> None:
        """Raise :class:`ServerProcessError` if the child was killed or exited with an error."""
        if self.killed:
            raise ServerProcessError(
                f"{self!r} did not exit within {self._stop_timeout}s of SIGINT and was killed; "
                f"its output:\n{self.output() or '(none)'}"
            )
        if self.returncode is not None and self.returncode not in _CLEAN_EXITS:
            raise ServerProcessError(
                f"{self!r} exited with status {self.returncode}; its output:\n"
                f"{self.output() or '(none)'}"
            )

    def _needs_start(self) -> bool:
        return self._proc is None

