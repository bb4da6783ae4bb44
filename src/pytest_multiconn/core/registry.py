"""Which servers, proxies and loop threads of ours are alive: the source of the leak checks.

Besides the process-wide set of live servers, the registry keeps a small record per test
(set by the plugin around each test): the servers started while the test ran, where each one
was started, and which of our threads were alive before it began.  Servers started while a
wider-scoped fixture (module, session...) is being set up are noted as long-lived instead, so
a session server is never mistaken for a leak of the test that happened to create it.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any

_lock = threading.Lock()
_live: weakref.WeakSet[Any] = weakref.WeakSet()
# Where each server was started and during which test: "started by fixture 'x'", or the
# frames to say "started at file:line in func" with (formatted when a report asks).
_Origin = tuple[str | tuple[tuple[str, int, str], ...], str]
_origins: weakref.WeakKeyDictionary[Any, _Origin] = weakref.WeakKeyDictionary()
# Servers and threads that belong to a fixture wider than one test.
_long_lived: weakref.WeakSet[Any] = weakref.WeakSet()
_long_lived_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

#: Every thread we start has a name that begins with this.
THREAD_PREFIX = "multiconn-"

# Thread names carry the test's name up to this length, and origins this many frames.
_MAX_TEST_NAME = 40
_ORIGIN_FRAMES = 2


def _package_dir(module: Any) -> str:
    return str(os.path.dirname(os.path.abspath(module.__file__))) + os.sep


# Frames from these directories say nothing about where the user started a server: the whole
# package's (a server started by a fixture, a proxy or the suite is found where *they* were
# called), the standard library's, and pytest's and pluggy's machinery (loaded first when we
# run as a plugin; without pytest there is no test to attribute a server to anyway).
_SKIP_DIRS: tuple[str, ...] = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    *(
        _package_dir(sys.modules[name])
        for name in ("threading", "_pytest", "pytest", "pluggy")
        if name in sys.modules
    ),
)


class TestRecord:
    """What one test started: filled by :func:`track_server` while the test is current."""

    __test__ = False  # not a pytest test class, despite the name
    __slots__ = ("__weakref__", "_tag", "nodeid", "previous", "servers", "threads_before")

    def __init__(self, nodeid: str, previous: TestRecord | None) -> None:
        self.nodeid = nodeid
        self.previous = previous
        self.servers: list[Any] = []
        # Every thread, not only ours: filtering by name is left to leaked_threads, which
        # looks only at the threads that are new (every test of a run pays for this one).
        # Thread objects, not idents: the OS reuses idents of threads that ended.
        self.threads_before = set(threading.enumerate())
        self._tag: str | None = None

    @property
    def tag(self) -> str:
        """``[gw0:test_name]`` (``[test_name]`` without xdist): made when a thread is named."""
        tag = self._tag
        if tag is None:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "")
            name = self.nodeid.rpartition("::")[2] or self.nodeid
            if len(name) > _MAX_TEST_NAME:
                name = name[: _MAX_TEST_NAME - 3] + "..."
            tag = self._tag = f"[{worker}:{name}]" if worker else f"[{name}]"
        return tag

    def __repr__(self) -> str:
        return f"<TestRecord {self.nodeid!r} servers={len(self.servers)}>"


_current: TestRecord | None = None
# Fixtures being set up right now (innermost last): (name, scope).
_fixtures: list[tuple[str, str]] = []


def begin_test(nodeid: str) -> TestRecord:
    """Make a new record current (the plugin calls this before a test's setup)."""
    global _current  # noqa: PLW0603 - one current test per process, by design
    record = TestRecord(nodeid, _current)
    _current = record
    return record


def end_test(record: TestRecord) -> None:
    """Restore the record that was current before ``record`` (nested pytester runs)."""
    global _current  # noqa: PLW0603 - one current test per process, by design
    if _current is record:
        _current = record.previous
    record.previous = None


def current_test() -> TestRecord | None:
    return _current


def push_fixture(name: str, scope: str) -> set[threading.Thread] | None:
    """Note that fixture ``name`` is being set up; returns the thread snapshot to pop with."""
    _fixtures.append((name, scope))
    return set(live_threads()) if scope != "function" else None


def pop_fixture(before: set[threading.Thread] | None) -> None:
    """The fixture pushed last finished its setup; a wide one keeps the threads it started."""
    if _fixtures:
        _fixtures.pop()
    if before is not None:
        for thread in live_threads():
            if thread not in before:
                _long_lived_threads.add(thread)


def keep_thread(thread: threading.Thread) -> None:
    """``thread`` outlives tests by design (a shared loop's): never a leak of one test."""
    _long_lived_threads.add(thread)


def _wide_fixture() -> str | None:
    for name, scope in reversed(_fixtures):
        if scope != "function":
            return f"{scope}-scoped fixture {name!r}"
    return None


def thread_tag() -> str:
    """``[gw0:test_name]`` while a test runs (``[test_name]`` without xdist), else ``""``."""
    record = _current
    return record.tag if record is not None else ""


def _where() -> tuple[tuple[str, int, str], ...]:
    """The innermost frames outside our package and pytest's machinery: (file, line, function)
    each, formatted only if a report asks (``os.path.relpath`` costs more than the walk)."""
    frame = sys._getframe(2)
    found: list[tuple[str, int, str]] = []
    while frame is not None and len(found) < _ORIGIN_FRAMES:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_DIRS):
            found.append((filename, frame.f_lineno, frame.f_code.co_name))
        elif found:
            break  # back in the test runner's machinery: the user's frames are all found
        frame = frame.f_back  # type: ignore[assignment]
    return tuple(found)


def _format_where(found: tuple[tuple[str, int, str], ...]) -> str:
    return " <- ".join(
        f"{os.path.relpath(filename)}:{line} in {function}" for filename, line, function in found
    ) or "unknown"


def track_server(server: Any) -> None:
    """Note a started server (or proxy); ``untrack_server`` when it stops."""
    record = _current
    origin: _Origin | None = None
    wide: str | None = None
    if record is not None:
        fixture = _fixtures[-1][0] if _fixtures else None
        wide = _wide_fixture()
        origin = (
            f"started by {wide}" if wide else
            f"started by fixture {fixture!r}" if fixture else
            _where()
        ), record.nodeid
    with _lock:
        _live.add(server)
        if origin is not None:
            _origins[server] = origin
        if record is not None:
            if wide:
                _long_lived.add(server)
            else:
                record.servers.append(server)


def untrack_server(server: Any) -> None:
    with _lock:
        _live.discard(server)


def origin_of(server: Any) -> str:
    """Where ``server`` was started, as far as we know (empty outside tests)."""
    with _lock:
        origin = _origins.get(server)
    if origin is None:
        return ""
    how, nodeid = origin
    if not isinstance(how, str):
        how = f"started at {_format_where(how)}"
    return f"{how} during {nodeid}"


def is_long_lived(server: Any) -> bool:
    with _lock:
        return server in _long_lived


def live_servers() -> list[Any]:
    """Servers and proxies started and not yet stopped."""
    with _lock:
        return list(_live)


def is_live(server: Any) -> bool:
    with _lock:
        return server in _live


def live_threads() -> list[threading.Thread]:
    """Our loop threads that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]


def leaked_threads(record: TestRecord) -> list[threading.Thread]:
    """Our threads alive now that were not before ``record`` began, nor belong to a wide
    fixture."""
    before = record.threads_before
    return [
        t
        for t in threading.enumerate()
        if t not in before
        and t.name.startswith(THREAD_PREFIX)
        and t not in _long_lived_threads
        and t.is_alive()
    ]
