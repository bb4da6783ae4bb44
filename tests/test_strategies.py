"""pytest_multiconn.strategies: schedules that Hypothesis shrinks, applied to real sockets.

The fragile server below has the bug these strategies exist to find: it assumes one recv()
holds one whole line.  A Hypothesis search over chunkings must find a split that breaks it
and shrink it to the one-split schedule; Hypothesis runs programmatically inside the tests
(derandomized, no example database, bounded examples), so they are deterministic and quick.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.faults import PartialSend
from pytest_multiconn.proxy import Latency, Slicer, Truncate
from pytest_multiconn.strategies import (
    Chunking,
    FaultSchedule,
    chunkings,
    client_faults,
    fault_schedules,
    pauses,
    serving,
    toxics,
)

TIMEOUT = 5.0
REQUEST = b"PING hello\n"
QUICK = settings(derandomize=True, database=None, deadline=None, max_examples=40,
                 phases=[Phase.generate, Phase.shrink], print_blob=False,
                 suppress_health_check=[HealthCheck.too_slow])


@dataclass
class _Stats:
    bytes_in: int


class FragileLineServer:
    """Replies ``OK <line>`` to each line, but treats every recv() as one whole line: a line
    split over two reads gets ``ERR split line``.  Counts what it reads (``stats().bytes_in``,
    ``wait_for_bytes``) so a step-mode proxy can make each of its reads exactly one chunk."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = self.sock.getsockname()
        self.cond = threading.Condition()
        self.received = 0
        self.reads: list[bytes] = []
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> FragileLineServer:
        self._start(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        for thread in list(self.threads):
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "fragile server thread did not stop"

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # the listener was shut down
            self._start(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                with self.cond:
                    self.received += len(data)
                    self.reads.append(data)
                    self.cond.notify_all()
                # The bug under test: no buffering of a partial line.
                reply = b"OK " + data if data.endswith(b"\n") else b"ERR split line\n"
                try:
                    conn.sendall(reply)
                except OSError:  # the client read its first reply and closed: RST
                    return

    def stats(self) -> _Stats:
        with self.cond:
            return _Stats(self.received)

    def wait_for_bytes(self, n: int, timeout: float = TIMEOUT) -> _Stats:
        with self.cond:
            if not self.cond.wait_for(lambda: self.received >= n, timeout):
                raise AssertionError(f"fragile server read {self.received} of {n} bytes")
            return _Stats(self.received)


def _exchange(chunking: Chunking) -> tuple[bytes, list[bytes]]:
    with serving(FragileLineServer, timeout=TIMEOUT) as served:
        sock = served.connect()
        served.send(sock, REQUEST, chunking)
        reply = served.recv_line(sock)
        return reply, list(served.server.reads)


def test_the_fragile_server_works_unsplit_and_the_split_is_exact_at_the_server() -> None:
    assert _exchange(Chunking(len(REQUEST))) == (b"OK " + REQUEST, [REQUEST])
    reply, reads = _exchange(Chunking(len(REQUEST), (3, 7)))
    assert reads == [b"PIN", b"G he", b"llo\n"]  # each server recv() is one chunk, no merging
    assert reply == b"ERR split line\n"


def test_given_over_the_fragile_server_fails_and_shrinks_to_one_split() -> None:
    @QUICK
    @given(chunking=chunkings(REQUEST, max_cuts=6))
    def line_server_reads_split_lines(chunking: Chunking) -> None:
        reply, _ = _exchange(chunking)
        assert reply == b"OK " + REQUEST

    with pytest.raises(AssertionError) as info:
        line_server_reads_split_lines()
    report = "\n".join(getattr(info.value, "__notes__", []))
    # The falsifying example is the smallest schedule that fails: one cut, after byte 1.
    assert "chunking=Chunking(size=11, cuts=(1,))" in report, report
    assert "sending 11 bytes: split after byte 1 (chunks (1, 10))" in report, report


def test_find_returns_the_minimal_failing_chunking() -> None:
    minimal = find(chunkings(REQUEST), lambda c: _exchange(c)[0] != b"OK " + REQUEST,
                   settings=QUICK)
    assert minimal == Chunking(size=11, cuts=(1,))
    assert minimal.split(REQUEST) == [b"P", b"ING hello\n"]


def test_a_fault_schedule_shrinks_to_the_one_toxic_that_breaks_an_echo() -> None:
    payload = bytes(range(48))

    def echo_breaks(schedule: FaultSchedule) -> bool:
        with serving(EchoServer, schedule=schedule, timeout=TIMEOUT) as served:
            sock = served.connect()
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            got = bytearray()
            for _ in range(1000):  # bounded: the echo closes after our end-of-stream
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
            return bytes(got) != payload

    # Latency and Slicer keep the bytes; only Truncate loses some.
    minimal = find(fault_schedules(toxics(("latency", "slicer", "truncate"), max_ms=2),
                                   max_toxics=3),
                   echo_breaks, settings=QUICK)
    assert minimal == FaultSchedule(seed=0, toxics=((Truncate(bytes=0), "upstream"),))
    assert "Truncate(bytes=0) upstream (replay seed 0)" in minimal.describe()


def test_serving_replays_a_schedule_under_its_seed() -> None:
    schedule = FaultSchedule(seed=77, toxics=((Slicer(average_size=3, size_variation=2),
                                               "downstream"),))

    def transcript() -> str:
        with serving(schedule=schedule, timeout=TIMEOUT) as served:
            sock = served.connect()
            sock.sendall(b"x" * 40)
            got = bytearray()
            while len(got) < 40:
                chunk = sock.recv(40)
                assert chunk, "echo closed early"
                got += chunk
            assert served.proxy is not None
            assert served.proxy.seed == 77
            return served.connection(sock).transcript

    first = transcript()
    assert "slicer_downstream[down]: sliced into" in first
    sizes = re.findall(r"to-client\s+(\d+)", first)
    assert sizes
    assert re.findall(r"to-client\s+(\d+)", transcript()) == sizes


def test_a_schedule_s_client_faults_run_on_the_multiconn_client() -> None:
    schedule = FaultSchedule(seed=9, toxics=((Slicer(average_size=2), "downstream"),),
                             client_faults=(PartialSend(max_chunk=3),))
    payload = bytes(range(30))
    with serving(schedule=schedule, timeout=TIMEOUT) as served:
        results = MultiConnClient(served.address, 2, [payload], timeout=TIMEOUT,
                                  **schedule.client_kwargs()).run()
        results.check()  # byte-exact echo through the slicer, sent in pieces of <= 3
    for result in results:
        assert max(result.send_sizes) <= 3
        assert sum(result.send_sizes) == len(payload)


def test_strategies_draw_valid_values_and_shrink_to_the_simplest() -> None:
    assert find(chunkings(10, max_pause=0.01), lambda c: True, settings=QUICK) == Chunking(10)
    assert find(pauses(3, 0.5), lambda p: True, settings=QUICK) == (0.0, 0.0, 0.0)
    assert find(toxics(), lambda t: True, settings=QUICK) == Latency(ms=0)
    assert find(client_faults(), lambda f: True, settings=QUICK) == PartialSend(max_chunk=1)
    assert find(fault_schedules(max_client_faults=1), lambda s: True,
                settings=QUICK) == FaultSchedule()

    @QUICK
    @given(chunking=chunkings(20, max_cuts=5, max_pause=0.001), schedule=fault_schedules())
    def every_draw_is_consistent(chunking: Chunking, schedule: FaultSchedule) -> None:
        assert sum(chunking.sizes) == 20
        assert len(chunking.sizes) == len(chunking.cuts) + 1 <= 6
        assert all(0 <= p <= 0.001 for p in chunking.pauses)
        assert len(schedule.toxics) <= 3

    every_draw_is_consistent()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Chunking(5, (0,)), "cuts must rise strictly within 1..4"),
    (lambda: Chunking(5, (3, 2)), "cuts must rise strictly"),
    (lambda: Chunking(5, (5,)), "cuts must rise strictly"),
    (lambda: Chunking(-1), "size must be an integer >= 0, got -1"),
    (lambda: Chunking(5, (2,), (float("nan"),)), "pauses must be a tuple of seconds"),
    (lambda: Chunking(5, (2,), (0.1, 0.1)), "one pause per cut (1), got 2"),
    (lambda: Chunking(5, [2]), "cuts must be a tuple of integers"),
    (lambda: chunkings(True), "chunkings: size must be an integer >= 0, got True"),
    (lambda: chunkings(5, max_pause=float("inf")), "max_pause must be seconds"),
    (lambda: pauses(-1), "count must be an integer >= 0, got -1"),
    (lambda: toxics(("lag",)), "unknown kinds ['lag']"),
    (lambda: fault_schedules(directions=("up",)), "directions must be some of"),
    (lambda: fault_schedules(max_toxics=-1), "max_toxics must be an integer >= 0, got -1"),
    (lambda: FaultSchedule(seed="1"), "seed must be an integer from 0 to 2**64 - 1, got '1'"),
    (lambda: FaultSchedule(toxics=((Latency(ms=1), "sideways"),)), "(Toxic, direction) pairs"),
    (lambda: serving(seed=1.5).__enter__(),
     "seed must be an integer from 0 to 2**64 - 1 or None (the run seed), got 1.5"),
])
def test_bad_inputs_are_refused_naming_the_value(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_without_hypothesis_the_error_names_the_extra(tmp_path: Any) -> None:
    # A child interpreter where "import hypothesis" fails: the module imports, a strategy
    # raises ImportError naming pytest-multiconn[hypothesis].
    blocker = tmp_path / "hypothesis.py"
    blocker.write_text("raise ImportError('blocked for this test')\n")
    code = ("import pytest_multiconn.strategies as s\n"
            "assert s.Chunking(4, (2,)).sizes == (2, 2)\n"
            "try:\n    s.chunkings(4)\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path)}, timeout=60, check=True)
    assert "pip install 'pytest-multiconn[hypothesis]'" in out.stdout


def test_chunking_describes_itself_in_words() -> None:
    assert Chunking(11, (3,)).describe() == "split after byte 3 (chunks (3, 8))"
    assert Chunking(11).describe() == "no split (11 bytes in one send)"
    assert "pauses 0.5, 0 s" in Chunking(11, (3, 4), (0.5, 0.0)).describe()
    assert repr(Chunking(11, (3,))) == "Chunking(size=11, cuts=(3,))"
    assert st is not None  # hypothesis.strategies importable next to ours


def test_as_a_pytest_user_writes_it(pytester: pytest.Pytester) -> None:
    # The documented pattern, run by pytest itself: @given with the function-scoped
    # multiconn_server fixture trips Hypothesis's health check; serving() inside @given does
    # not, and the failure prints the shrunk schedule with its replay seed.
    pytester.makepyfile(test_user="""
        import socket
        from hypothesis import Phase, given, settings, strategies as st
        from pytest_multiconn.strategies import fault_schedules, serving, toxics

        @given(n=st.integers())
        def test_with_the_fixture(multiconn_server, n):
            pass

        @settings(max_examples=30, derandomize=True, database=None, deadline=None,
                  phases=[Phase.generate, Phase.shrink])
        @given(schedule=fault_schedules(toxics(("latency", "truncate"), max_ms=1)))
        def test_echo_is_exact(schedule):
            with serving(schedule=schedule, timeout=5.0) as served:
                sock = served.connect()
                sock.sendall(b"hello")
                sock.shutdown(socket.SHUT_WR)
                got = b""
                for _ in range(100):
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    got += chunk
                assert got == b"hello"
    """)
    # The isolated pytester (tests/conftest.py) loads no entry-point plugin: Hypothesis's own
    # pytest plugin, which runs the health check, is asked for by module name.
    result = pytester.runpytest("-p", "_hypothesis_pytestplugin", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "function_scoped_fixture" in out
    assert "toxics=((Truncate(bytes=0), 'upstream'),)," in out  # the shrunk schedule
    assert "faults Truncate(bytes=0) upstream (replay seed 0)" in out
