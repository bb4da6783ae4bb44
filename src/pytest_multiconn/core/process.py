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

The child never outlives us.  A parent that dies without ``stop()`` (``os._exit``,
pytest-timeout's thread method, a crashed xdist worker) would leave it listening, so the
child is told twice (``multiconn server --parent-pipe FD [--parent-death-signal]``):

* it holds the read end of a pipe whose write end only this process holds (close-on-exec, so
  no other child inherits it): when we die, the kernel closes it, the child reads EOF and
  stops as on SIGTERM.  Portable, and it works whichever thread started the child;
* on Linux, when started from the main thread, it also asks for SIGTERM on parent death
  (``prctl(PR_SET_PDEATHSIG)``).  Linux sends that signal when the *thread* that forked the
  child ends, so a child started from another thread relies on the pipe alone.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

from pytest_multiconn.core.checks import check_seconds
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
        timeout = check_seconds(timeout, "timeout")  # inf and NaN too, which `> 0` let by
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
        # Our end of the pipe that tells the child we are alive (EOF: we died).
        self._lifeline: int | None = None

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
        # os.pipe() is close-on-exec: the write end stays ours alone, the read end goes to
        # the child through pass_fds.
        child_end, self._lifeline = os.pipe()
        command = [*self.command, "--parent-pipe", str(child_end)]
        if threading.current_thread() is threading.main_thread():
            command.append("--parent-death-signal")
        try:
            # The command is our own interpreter and module; the host is checked by the child.
            self._proc = subprocess.Popen(  # noqa: S603 - no shell, fixed program
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                pass_fds=(child_end,),
            )
        except BaseException:
            self._close_lifeline()
            raise
        finally:
            os.close(child_end)
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
        timeout = self.timeout if timeout is None else check_seconds(timeout, "timeout")
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

    def _close_lifeline(self) -> None:
        fd, self._lifeline = self._lifeline, None
        if fd is not None:
            os.close(fd)

    def _join_reader(self) -> None:
        self._close_lifeline()  # the child has exited: nobody reads the pipe any more
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

    def needs_start(self) -> bool:
        return self._proc is None



# -- in the child ----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def exit_with_parent(pipe_fd: int, *, death_signal: bool) -> None:
    """In the child: SIGTERM ourselves when the parent dies (EOF on ``pipe_fd``, and with
    ``death_signal`` on Linux also ``PR_SET_PDEATHSIG``), so ``stop_on_signals`` stops the
    server as a ``kill`` would.  See the module docstring."""
    if death_signal and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    def watch() -> None:
        # Nobody writes: read() returns b"" once the parent's end is closed, i.e. it died
        # (or it dropped the pipe in stop(), after which it stops us anyway).
        try:
            while os.read(pipe_fd, 64):
                pass
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(pipe_fd)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name=f"{THREAD_PREFIX}parent-watch", daemon=True).start()
