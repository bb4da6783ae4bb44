"""A scripted server, for testing clients of raw TCP protocols (what pytest-httpserver does
for HTTP, for any protocol).

A script is a list of steps run in order on one connection::

    ScriptedServer([Expect(b"PING\\r\\n"), Reply(b"+PONG\\r\\n"), Expect(line=None), Close()])

``Expect`` waits for exact bytes, a line (any, or a given one), a regular expression over
everything up to a terminator, or a number of bytes; ``Reply`` writes (bytes, or a function
of what the last ``Expect`` took); ``Pause`` waits; ``WriteEOF``, ``Close``, ``Abort`` and
``Hang`` end the exchange the way a broken peer would.  ``scripts=[a, b]`` gives each
connection its own script in accept order, ``cycle=True`` starts over after the last.

When the client sends something the script did not expect, the connection is closed and the
failure is recorded with both sides' bytes; :meth:`ScriptedServer.check` (and the end of a
``with`` block, and the ``multiconn_scripted_server_factory`` fixture) raise :class:`ScriptMismatch`
in the test.  So do bytes that arrive after the script ended, an ``Expect`` still waiting
after ``expect_timeout`` seconds, and, once the server has stopped, a script that never ran
because its connection never came (every entry of ``scripts=``, each at least once with
``cycle=True``; ``script=`` needs one connection): ``optional=True`` (or the indexes of the
scripts that may go unused) says the client may not connect.

Intake is linear in what the client sends (a step's search resumes where the last read left
it; nothing copies the whole buffer per read) and bounded: a connection keeps at most
``max_buffer`` bytes (16 MiB by default) that its current step has not taken, and more fails
the script naming the step and the limit; a step that could never fit is refused when the
server is made.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.blocking import to_thread
from pytest_multiconn.core.checks import check_bool, check_count, check_items, check_seconds
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Timer
from pytest_multiconn.core.server import ServerBase
from pytest_multiconn.errors import ScriptMismatch
from pytest_multiconn.exchanges.base import describe_difference
from pytest_multiconn.servers.protocol import take_tls

if TYPE_CHECKING:
    import ssl


@dataclass(frozen=True)
class Expect:
    """Wait for what the client sends next: exactly ``data``; or a ``line`` (``None``: any
    line; ``delimiter`` ends it); or bytes up to and including ``until`` that fully match
    ``regex``; or ``n`` bytes.  Give exactly one of ``data``, ``line``, ``regex``, ``n``
    (``line=None`` with ``any_line=True`` for any line)."""

    data: bytes | None = None
    line: bytes | None = None
    any_line: bool = False
    regex: bytes | str | None = None
    until: bytes = b"\n"
    n: int | None = None
    delimiter: bytes = b"\n"

    def __post_init__(self) -> None:
        given = [
            self.data is not None,
            self.line is not None or self.any_line,
            self.regex is not None,
            self.n is not None,
        ]
        if sum(given) != 1:
            raise ValueError("Expect takes exactly one of data=, line= (or any_line=True), "
                             "regex= or n=")
        for name in ("data", "line", "until", "delimiter"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, value.encode())
            elif value is not None and not isinstance(value, bytes):
                raise TypeError(f"{name} must be bytes, got {value!r}")
        if self.data is not None and not self.data:
            raise ValueError("data must not be empty")
        if not self.until or not self.delimiter:
            raise ValueError("until and delimiter must not be empty")
        if self.n is not None:
            check_count(self.n, "n", minimum=1)
        if self.regex is not None:
            pattern = self.regex.encode() if isinstance(self.regex, str) else self.regex
            object.__setattr__(self, "regex", pattern)
            object.__setattr__(self, "_rx", re.compile(pattern, re.DOTALL))

    def describe(self) -> str:
        if self.data is not None:
            return f"Expect({self.data[:40]!r})"
        if self.line is not None:
            return f"Expect(line={self.line[:40]!r})"
        if self.any_line:
            return "Expect(any line)"
        if self.regex is not None:
            return f"Expect(regex={self.regex!r})"
        return f"Expect(n={self.n})"

    @property
    def end_mark(self) -> bytes | None:
        """What ends the bytes a line or regex expectation takes (None for data and n)."""
        if self.regex is not None:
            return self.until
        if self.line is not None or self.any_line:
            return self.delimiter
        return None

    def needs(self) -> int:
        """The fewest bytes that can satisfy it (all kept at once until it is)."""
        if self.data is not None:
            return len(self.data)
        if self.n is not None:
            return self.n
        if self.line is not None:
            return len(self.line) + len(self.delimiter)
        return len(self.until if self.regex is not None else self.delimiter)

    def take(  # noqa: PLR0911 - one return per outcome of each kind of expectation
        self, buf: bytes | bytearray, eof: bool, start: int = 0
    ) -> tuple[int | None, str | None]:
        """``(bytes taken, None)`` when satisfied, ``(None, None)`` when it needs more,
        ``(None, why)`` when ``buf`` cannot satisfy it.

        ``buf`` is read, never copied whole (slices of a bounded size only); ``start`` is
        where the search for the end mark resumes (no mark starts before it), so that
        taking a long line read by read costs time linear in its length.
        """
        if self.data is not None:
            head = bytes(buf[: len(self.data)])
            if not self.data.startswith(head):
                return None, describe_difference(self.data, head)
            if len(buf) >= len(self.data):
                return len(self.data), None
            return None, (f"the client closed after {len(buf)} of {len(self.data)} bytes: "
                          f"{head[:40]!r}" if eof else None)
        if self.n is not None:
            if len(buf) >= self.n:
                return self.n, None
            return None, (f"the client closed after {len(buf)} of {self.n} bytes" if eof
                          else None)
        end_mark = self.until if self.regex is not None else self.delimiter
        at = buf.find(end_mark, start)
        if at < 0:
            if self.line is not None:
                expected = self.line + self.delimiter
                head = bytes(buf[: len(expected) + 1])
                if not expected.startswith(head):
                    return None, describe_difference(expected, head)
            return None, (f"the client closed without sending {end_mark!r}; it sent "
                          f"{bytes(buf[:60])!r}" if eof else None)
        size = at + len(end_mark)
        chunk = bytes(buf[:size])
        if self.line is not None and chunk[: -len(self.delimiter)] != self.line:
            return None, describe_difference(self.line + self.delimiter, chunk)
        if self.regex is not None and not self._rx.fullmatch(chunk):  # type: ignore[attr-defined]
            return None, f"{chunk[:80]!r} does not match {self.regex!r}"
        return size, None


@dataclass(frozen=True)
class Reply:
    """Write ``data``, or ``data(taken)`` where ``taken`` is what the last Expect took."""

    data: bytes | str | Callable[[bytes], bytes]

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            object.__setattr__(self, "data", self.data.encode())
        if not callable(self.data) and not isinstance(self.data, bytes):
            raise TypeError(f"data must be bytes or a callable, got {self.data!r}")

    def describe(self) -> str:
        return f"Reply({self.data[:40]!r})" if isinstance(self.data, bytes) else "Reply(fn)"


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` before the next step (reading goes on meanwhile)."""

    seconds: float

    def __post_init__(self) -> None:
        check_seconds(self.seconds, "seconds", allow_zero=True)

    def describe(self) -> str:
        return f"Pause({self.seconds})"


@dataclass(frozen=True)
class WriteEOF:
    """Shut down our write side (the client reads EOF); the script may still expect data."""

    def describe(self) -> str:
        return "WriteEOF()"


@dataclass(frozen=True)
class Close:
    """Close gracefully once pending output is flushed."""

    def describe(self) -> str:
        return "Close()"


@dataclass(frozen=True)
class Abort:
    """Close at once with an RST: unsent output is dropped, the client sees ECONNRESET."""

    def describe(self) -> str:
        return "Abort()"


@dataclass(frozen=True)
class Hang:
    """Stop reading and never answer again; the connection stays open until the server stops."""

    def describe(self) -> str:
        return "Hang()"


Step = Expect | Reply | Pause | WriteEOF | Close | Abort | Hang
_STEPS = (Expect, Reply, Pause, WriteEOF, Close, Abort, Hang)


#: ``ScriptedServer(max_buffer=)``'s default: 16 MiB.
DEFAULT_MAX_BUFFER = 16 * 1024 * 1024

#: How many of the first bytes a client sent a failure report keeps.
RECEIVED_KEPT = 64 * 1024


def _check_max_buffer(max_buffer: object, scripts: tuple[tuple[Step, ...], ...],
                      every: bool) -> int:
    max_buffer = check_count(max_buffer, "max_buffer", minimum=1)
    for i, steps in enumerate(scripts):
        for j, step in enumerate(steps):
            if isinstance(step, Expect) and step.needs() > max_buffer:
                where = f"script[{j}]" if every else f"scripts[{i}][{j}]"
                raise ValueError(
                    f"{where}: {step.describe()} needs {step.needs()} B kept at once, more "
                    f"than max_buffer={max_buffer} B; pass a larger max_buffer="
                )
    return max_buffer


def _check_optional(optional: object, count: int) -> frozenset[int]:
    if isinstance(optional, bool):
        return frozenset(range(count)) if optional else frozenset()
    if isinstance(optional, str | bytes) or not isinstance(optional, Collection):
        raise TypeError("optional must be True, False or a collection of script indexes "
                        f"(those of scripts=[...] that may never run), got {optional!r}")
    indexes = check_items(optional, "optional", int, "a script index (an int)")
    for k, i in enumerate(indexes):
        check_count(i, f"optional[{k}] (a script index)", minimum=-count)
    for i in indexes:
        if not 0 <= i < count:
            raise ValueError(f"optional names scripts[{i}], but there "
                             f"{'is 1 script' if count == 1 else f'are {count} scripts'}")
    return frozenset(optional)


def _check_script(script: Sequence[Step], name: str) -> tuple[Step, ...]:
    if not isinstance(script, list | tuple):
        raise TypeError(f"{name} must be a list of steps, got {script!r}")
    steps = tuple(script)
    for i, step in enumerate(steps):
        if not isinstance(step, _STEPS):
            raise TypeError(f"{name}[{i}] is not a script step (Expect, Reply, ...): {step!r}")
    return steps


@dataclass(frozen=True)
class ScriptFailure:
    """What went wrong on one connection; or, with ``connection=None``, a script that never
    ran because no connection came for it (``script`` names it: ``"scripts[1]"``)."""

    connection: int | None
    step: int | None
    what: str
    received: bytes = b""
    script: str | None = None

    def __str__(self) -> str:
        if self.connection is None:
            return f"{self.script or 'a script'}: {self.what}"
        where = f"connection {self.connection}"
        if self.step is not None:
            where += f", step {self.step}"
        return f"{where}: {self.what}"


class ScriptedConnection(Connection):
    """Runs one script against one client."""

    def __init__(self, server: ScriptedServer, sock: socket.socket, addr: SocketAddress,
                 number: int, steps: tuple[Step, ...] | None) -> None:
        super().__init__(server.loop, sock, addr, high_water=server.high_water,
                         transcript_limit=server.transcript_limit)
        self.server = server
        self.number = number
        self.steps = steps
        self.index = 0
        self.buffer = bytearray()
        # What the last Expect took (a Reply(fn) is called with it); only the last is kept.
        self.taken: list[bytes] = []
        # The first bytes the client sent (for failure reports), at most RECEIVED_KEPT.
        self.received = bytearray()
        self.received_bytes = 0
        # Where the current Expect's search for its end mark resumes.
        self.scan_from = 0
        self.finished_script = False
        self.timer: Timer | None = None  # a Pause in progress
        self.expect_timer: Timer | None = None
        self.eof = False
        self.stalled = False

    def connection_made(self) -> None:
        if self.steps is None:
            count = len(self.server.scripts)
            self._fail(None, f"unexpected connection: the script covers {count} "
                       f"connection{'s' if count != 1 else ''}")
            return
        self._advance()

    def data_received(self, data: bytes) -> None:
        self.received_bytes += len(data)
        room = RECEIVED_KEPT - len(self.received)
        if room > 0:
            self.received += data[:room]
        if self.stalled:
            return
        self.buffer += data
        self._advance()
        limit = self.server.max_buffer
        if not self.closed and len(self.buffer) > limit:
            steps = self.steps or ()
            step = steps[self.index] if self.index < len(steps) else None
            self._fail(self.index if step is not None else None,
                       f"{step.describe() if step is not None else 'after the script'}: the "
                       f"client sent {len(self.buffer)} B that this step has not taken, more "
                       f"than max_buffer={limit} B (what the server keeps for one step); "
                       "raise ScriptedServer(max_buffer=...) if that is expected")

    def on_eof(self) -> None:
        self.eof = True
        self._advance()
        if not self.closed and (self.finished_script or self.stalled):
            self.finish()

    def _fail(self, step: int | None, what: str) -> None:
        self.server.record_failure(ScriptFailure(self.number, step, what, bytes(self.received)))
        self.reset()

    def _advance(self) -> None:  # noqa: PLR0911, PLR0912 - one branch per kind of step
        steps = self.steps
        if steps is None or self.closed or self.timer is not None:
            return
        for _ in range(len(steps) + 1):
            if self.index >= len(steps):
                break
            step = steps[self.index]
            if isinstance(step, Expect):
                taken, why = step.take(self.buffer, self.eof, self.scan_from)
                if why is not None:
                    self._fail(self.index, f"{step.describe()}: {why}")
                    return
                if taken is None:
                    mark = step.end_mark
                    if mark is not None:  # no mark starts before the last len(mark) - 1 bytes
                        self.scan_from = max(0, len(self.buffer) - len(mark) + 1)
                    self._arm_expect_timeout()
                    return
                self._disarm()
                self.scan_from = 0
                self.taken[:] = [bytes(self.buffer[:taken])]
                del self.buffer[:taken]
            elif isinstance(step, Reply):
                data = step.data
                if callable(data):
                    data = data(self.taken[-1] if self.taken else b"")
                self.write(data.encode() if isinstance(data, str) else data)
            elif isinstance(step, Pause):
                self.index += 1
                self.timer = self.loop.call_later(step.seconds, self._resume)
                return
            elif isinstance(step, WriteEOF):
                self.write_eof()
            elif isinstance(step, Close):
                self.index += 1
                self._done()
                self.finish()
                return
            elif isinstance(step, Abort):
                self.index += 1
                self._done()
                self.reset()
                return
            else:  # Hang
                self.index += 1
                self._done()
                self.stalled = True
                self.pause_reading()
                return
            self.index += 1
        if self.index >= len(steps):
            self._done()
            if self.buffer:
                self._fail(None, f"the client sent {len(self.buffer)} B after the script ended: "
                           f"{bytes(self.buffer[:60])!r}")
                return
            if self.eof:
                self.finish()

    def _resume(self) -> None:
        self.timer = None
        self._advance()

    def _arm_expect_timeout(self) -> None:
        if self.expect_timer is None and self.server.expect_timeout is not None:
            self.expect_timer = self.loop.call_later(
                self.server.expect_timeout, self._expect_timed_out
            )

    def _disarm(self) -> None:
        if self.expect_timer is not None:
            self.expect_timer.cancel()
            self.expect_timer = None

    def _expect_timed_out(self) -> None:
        self.expect_timer = None
        if self.steps is None or self.closed or self.index >= len(self.steps):
            return
        step = self.steps[self.index]
        self._fail(self.index, f"{step.describe()}: still waiting after "
                   f"{self.server.expect_timeout}s; the client sent {bytes(self.buffer[:60])!r}")

    def _done(self) -> None:
        if not self.finished_script:
            self.finished_script = True
            self.server.script_done(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._disarm()
        if not self.finished_script and self.steps is not None and not self.server.has_failed(self):
            step = self.steps[self.index] if self.index < len(self.steps) else None
            self.server.record_failure(ScriptFailure(
                self.number, self.index,
                f"the connection ended at {step.describe() if step else 'the end'} "
                f"({self.close_reason})", bytes(self.received)))
        self.server.connection_closed(self)


class ScriptedServer(ServerBase):
    """Serves ``script`` to every connection, or ``scripts[i]`` to the i-th (``cycle``:
    start over after the last).  Takes every ServerBase option (``tls=``, ``port=``...)."""

    kind = "scripted"

    def __init__(self, script: Sequence[Step] | None = None, *,
                 scripts: Sequence[Sequence[Step]] | None = None, cycle: bool = False,
                 expect_timeout: float | None = DEFAULT_TIMEOUT,
                 optional: bool | Collection[int] = False,
                 max_buffer: int = DEFAULT_MAX_BUFFER, **kwargs: Any) -> None:
        if (script is None) == (scripts is None):
            raise ValueError("give either script= (every connection) or scripts= (one each)")
        if scripts is not None:
            if not isinstance(scripts, list | tuple) or not scripts:
                raise ValueError(f"scripts must be a non-empty list of scripts, got {scripts!r}")
            self.scripts = tuple(_check_script(s, f"scripts[{i}]") for i, s in enumerate(scripts))
            self.every = False
        else:
            assert script is not None  # noqa: S101 - narrowed by the check above
            self.scripts = (_check_script(script, "script"),)
            self.every = True
        self.cycle = check_bool(cycle, "cycle")
        #: The indexes of the scripts that may never run (``optional=``): no connection came.
        self.optional = _check_optional(optional, len(self.scripts))
        #: The most bytes a connection keeps that its current step has not taken; more fails
        #: the script, naming the step and this limit.
        self.max_buffer = _check_max_buffer(max_buffer, self.scripts, self.every)
        self.expect_timeout = (None if expect_timeout is None
                               else check_seconds(expect_timeout, "expect_timeout"))
        self.tls = take_tls(kwargs)
        super().__init__(**kwargs)
        self.failures: list[ScriptFailure] = []
        self.completed = 0
        self._numbers = 0
        self._failed_conns: set[int] = set()
        # The indexes of the scripts a connection has started (loop thread).
        self._scripts_begun: set[int] = set()

    def _script_index(self, number: int) -> int | None:
        if self.every:
            return 0
        if self.cycle:
            return (number - 1) % len(self.scripts)
        return number - 1 if number <= len(self.scripts) else None

    def _steps_for(self, number: int) -> tuple[Step, ...] | None:
        index = self._script_index(number)
        return None if index is None else self.scripts[index]

    def _script_name(self, index: int) -> str:
        return "script (every connection)" if self.every else f"scripts[{index}]"

    def make_connection(self, sock: socket.socket, addr: SocketAddress) -> Connection:
        self._numbers += 1
        index = self._script_index(self._numbers)
        if index is not None:
            self._scripts_begun.add(index)
        return ScriptedConnection(self, sock, addr, self._numbers, self._steps_for(self._numbers))

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop, then record a failure for each script that never ran (no connection came
        for it) unless ``optional`` excuses it; :meth:`check` raises them."""
        first = self._started and not self._stopped
        super().stop(timeout)
        if first:
            for index, steps in enumerate(self.scripts):
                if index in self._scripts_begun or index in self.optional:
                    continue
                step = (f"step 0: {steps[0].describe()} not reached" if steps
                        else "an empty script")
                self.failures.append(ScriptFailure(
                    None, 0 if steps else None,
                    f"no connection came for it, so it never ran ({step}); pass "
                    "optional=True (or the indexes of the scripts that may go unused) if "
                    "the client may not connect", script=self._script_name(index)))

    @property
    def client_tls(self) -> ssl.SSLContext | None:
        """A client SSLContext that trusts this server (None for plaintext)."""
        return self.tls.client_context if self.tls is not None else None

    # -- what its connections report (loop thread) ---------------------------------------------
    def record_failure(self, failure: ScriptFailure) -> None:
        """A connection strayed from its script (``check()`` raises it)."""
        if failure.connection is not None:
            self._failed_conns.add(failure.connection)
        self.failures.append(failure)
        self.notify()

    def has_failed(self, conn: ScriptedConnection) -> bool:
        """A failure was recorded for ``conn`` already."""
        return conn.number in self._failed_conns

    def script_done(self, conn: ScriptedConnection) -> None:
        """``conn`` ran its script to the end."""
        self.completed += 1
        self.notify()

    def check(self) -> None:
        """Raise :class:`ScriptMismatch` naming every failure (and re-raise loop errors)."""
        super().check()
        if self.failures:
            lines = "\n".join(f"  {f}\n    the client sent: {f.received[:200]!r}"
                              for f in self.failures[:10])
            raise ScriptMismatch(f"{len(self.failures)} script failure(s) on {self!r}:\n{lines}")

    def wait_for_scripts(self, n: int = 1, timeout: float | None = None) -> None:
        """Wait until ``n`` connections ran their script to the end (raise on a failure);
        ``timeout`` defaults to the server's (``ScriptedServer(timeout=)``), as every wait."""
        self._refuse_blocking("wait_for_scripts")
        self._wait_for(lambda s: self.completed >= n or bool(self.failures), timeout,
                       f"{n} completed script(s)")
        self.check()

    async def await_for_scripts(self, n: int = 1, timeout: float | None = None) -> None:
        """Awaitable twin of :meth:`wait_for_scripts` (asyncio or trio; needs ``[async]``)."""
        await to_thread(self.wait_for_scripts, n, timeout)
