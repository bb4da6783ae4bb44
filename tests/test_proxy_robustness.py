"""FaultProxy under hostile use (issue 14): descriptor exhaustion, any number of connections,
a connection that makes the loop work hard, bad values, and waits that do not poll."""

from __future__ import annotations

import gc
import json
import math
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import WAIT, connect, recv_exactly
from pytest_multiconn import EchoServer, FaultProxy, MultiConnClient, RemoteBindError, WaitTimeout
from pytest_multiconn.cli import main
from pytest_multiconn.errors import WaitImpossible
from pytest_multiconn.lowlevel import Connection
from pytest_multiconn.proxy import Slicer
from pytest_multiconn.proxy.proxy import CLOSED_HISTORY

KiB = 1024


# -- out of descriptors ---------------------------------------------------------------------------
# In a child process: the descriptor limit is per process, and the test must not starve the
# pytest worker.  The child fills its descriptor table, then gives back exactly two: one for
# the client's socket and one for the proxy's accept(), so it is the proxy's socket to its
# target that fails with EMFILE (the case that used to close the listener for good).
_EMFILE_CHILD = textwrap.dedent(
    """
    import errno, json, os, resource, socket
    from pytest_multiconn import EchoServer, FaultProxy

    def round_trip(address):
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"ping")
            data = b""
            while len(data) < 4:
                chunk = sock.recv(4 - len(data))
                if not chunk:
                    break
                data += chunk
            return data

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    result = {}
    with EchoServer() as target, FaultProxy(target, timeout=5) as proxy:
        assert round_trip(proxy.address) == b"ping"
        # Every descriptor of that connection closed (both proxy sides, the echo's) before
        # the table is filled, or one freed later would let the next client through.
        proxy.wait_for_connection().wait_closed()
        target.wait_for_closed(1)
        fillers = []
        try:
            for _ in range(100_000):
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        os.close(fillers.pop())
        os.close(fillers.pop())
        client = None
        try:
            # The RST can come before connect() returns: a loaded machine wakes us late.
            client = socket.create_connection(proxy.address, timeout=5)
            client.sendall(b"x")
            result["refused_with"] = repr(client.recv(1))
        except OSError as exc:
            result["refused_with"] = type(exc).__name__
        stats = proxy.wait_for(lambda s: s.accept_errors >= 1, 5, "the EMFILE to be counted")
        result["accept_errors"] = stats.accept_errors
        if client is not None:
            client.close()
        for fd in fillers:
            os.close(fd)
        result["after"] = [round_trip(proxy.address).decode() for _ in range(10)]
        proxy.check()
        result["accepted"] = proxy.stats().accepted
    print(json.dumps(result))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_NOFILE, /proc/self/fd")
def test_proxy_backs_off_when_out_of_descriptors_and_recovers():
    proc = subprocess.run([sys.executable, "-c", _EMFILE_CHILD], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The client the proxy could not serve was refused (reset, or closed at once)...
    assert result["refused_with"] in ("ConnectionResetError", "b''", "BrokenPipeError"), result
    # ...the shortage was counted, and once descriptors were free every connection worked.
    assert result["accept_errors"] >= 1
    assert result["after"] == ["ping"] * 10
    assert result["accepted"] == 11  # the first, the ten after; the refused one never counted


# -- any number of short connections ----------------------------------------------------------
def _live_connections() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Connection))


def test_closed_connections_are_kept_only_up_to_a_bounded_history(multiconn_server):
    batches, per_batch = 10, 300
    total = batches * per_batch
    with FaultProxy(multiconn_server, timeout=WAIT) as proxy:
        MultiConnClient(proxy.address, 5, [b"warm"], timeout=WAIT).run().check()
        proxy.wait_for_closed(5)
        multiconn_server.wait_for_closed(5)
        before = _live_connections()
        for _ in range(batches):
            MultiConnClient(proxy.address, per_batch, [b"x"], timeout=30).run().check()
        proxy.wait_for_closed(5 + total, timeout=30)
        multiconn_server.wait_for_closed(5 + total, timeout=30)
        retained = _live_connections() - before
        # Two sides per proxied connection: without a bound this is 2 * 3000.  With it, at most
        # 2 * CLOSED_HISTORY unclaimed ones (each with two sides), plus a few recent ones kept
        # for reports, whatever the number of connections.
        bound = 2 * (2 * CLOSED_HISTORY) + 64
        assert retained <= bound, f"{retained} connection objects kept after {total} connections"
        # A test can still claim the recent connections, in accept order, down to the last.
        claimed = []
        for _ in range(2 * CLOSED_HISTORY):
            handle = proxy.wait_for_connection()
            assert handle.closed
            claimed.append(handle.number)
            if handle.number == 5 + total:
                break
        assert claimed == sorted(claimed)
        assert claimed[-1] == 5 + total
        assert len(claimed) >= CLOSED_HISTORY
        assert claimed[0] > 5  # the oldest were dropped
        with pytest.raises(WaitTimeout):
            proxy.wait_for_connection(timeout=0.2)


# -- fairness -----------------------------------------------------------------------------------
class _BulkEcho:
    """Sends ``payload`` on ``sock`` in one thread and reads the echo back in another."""

    def __init__(self, sock: socket.socket, payload: bytes) -> None:
        self.sock = sock
        self.payload = payload
        self.received = bytearray()
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        self.reader = threading.Thread(target=self._read_back, daemon=True)
        self.sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)

    def _read_back(self) -> None:
        try:
            while len(self.received) < len(self.payload):
                chunk = self.sock.recv(64 * KiB)
                if not chunk:
                    break
                self.received.extend(chunk)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.errors.append(exc)
        finally:
            self.done.set()

    def start(self) -> None:
        self.reader.start()
        self.sender.start()

    def join(self) -> None:
        self.sender.join(WAIT)
        self.reader.join(WAIT)
        assert not self.sender.is_alive()
        assert not self.reader.is_alive()
        assert not self.errors, self.errors


def test_a_one_byte_slicer_on_a_bulk_connection_does_not_starve_another():
    # The bulk connection's upstream is cut into one-byte writes (one send() each); a probe
    # connection on the same proxy does one-byte round trips while the bulk transfer runs.
    # When one connection may take the loop for a whole read (65,536 writes), the probe
    # manages a handful of round trips in the whole transfer; with the work bounded per loop
    # turn it keeps going.  Counted, not timed, so a loaded machine slows both alike.
    size = 128 * KiB
    payload = bytes(range(256)) * (size // 256)
    with EchoServer() as target, FaultProxy(target, timeout=WAIT) as proxy:
        proxy.add(Slicer(average_size=1), direction="upstream")
        probe = connect(proxy.address)
        bulk = connect(proxy.address)
        probe.settimeout(30)
        bulk.settimeout(30)
        probe.sendall(b"!")
        assert recv_exactly(probe, 1) == b"!"
        transfer = _BulkEcho(bulk, payload)
        start = time.monotonic()
        transfer.start()
        done = transfer.done
        round_trips, worst = 0, 0.0
        deadline = start + 60
        while not done.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            probe.sendall(b"?")
            assert recv_exactly(probe, 1) == b"?"
            worst = max(worst, time.monotonic() - t0)
            if not done.is_set():
                round_trips += 1
        assert done.wait(60), "the bulk transfer did not finish"
        bulk_time = time.monotonic() - start
        transfer.join()
        probe.close()
        bulk.close()
        assert bytes(transfer.received) == payload
        proxy.check()
        summary = (f"{round_trips} probe round trips during a {bulk_time:.2f}s bulk transfer, "
                   f"worst {worst * 1e3:.1f} ms")
        assert round_trips >= 50, summary
        assert worst < bulk_time / 4, summary


# -- bad values, refused where they are given -----------------------------------------------------
@pytest.mark.parametrize("timeout", [-1, 0, math.nan, math.inf, "1", True, None])
def test_bad_timeout_is_refused(multiconn_server, timeout: Any):
    with pytest.raises(ValueError, match=rf"timeout must be .* got {timeout!r}"):
        FaultProxy(multiconn_server, timeout=timeout)


def test_bad_wait_timeout_is_refused(multiconn_server):
    with FaultProxy(multiconn_server, timeout=WAIT) as proxy:
        for bad in (-1, math.nan, math.inf):
            with pytest.raises(ValueError, match="timeout must be"):
                proxy.wait_for_connection(timeout=bad)


@pytest.mark.parametrize("probability", ["x", math.nan, -0.1, 1.5, True])
def test_bad_probability_is_refused_by_add_and_update(multiconn_server, probability: Any):
    with FaultProxy(multiconn_server, timeout=WAIT) as proxy:
        with pytest.raises(ValueError, match=rf"probability must be .* got {probability!r}"):
            proxy.add(Slicer(average_size=2), probability=probability)
        name = proxy.add(Slicer(average_size=2))
        with pytest.raises(ValueError, match=rf"probability must be .* got {probability!r}"):
            proxy.update(name, probability=probability)
        assert proxy.faults()[0].probability == 1.0


@pytest.mark.parametrize("target", [("127.0.0.1", 80, "junk"), ("127.0.0.1",), 80,
                                    ("127.0.0.1", "http"), (b"127.0.0.1", 80)])
def test_bad_target_is_refused(target: Any):
    with pytest.raises(ValueError, match="target"):
        FaultProxy(target)


@pytest.mark.parametrize("target", ["10.0.0.1:80", "[2001:db8::1]:443", "example.com:80"])
def test_host_port_string_is_an_address_not_a_socket_path(target: str):
    with pytest.raises(RemoteBindError, match="not a loopback address"):
        FaultProxy(target)


def test_host_port_strings_relay(multiconn_server):
    with FaultProxy(f"127.0.0.1:{multiconn_server.port}", "127.0.0.1:0",
                    timeout=WAIT) as proxy:
        assert proxy.target == ("127.0.0.1", multiconn_server.port)
        assert proxy.family == socket.AF_INET
        with connect(proxy.address) as sock:
            sock.sendall(b"hello")
            assert recv_exactly(sock, 5) == b"hello"


def test_a_unix_socket_path_is_still_a_path(tmp_path):
    proxy = FaultProxy(str(tmp_path / "target.sock"))
    assert proxy.target == str(tmp_path / "target.sock")
    assert proxy.target_family == socket.AF_UNIX
    for path in ("./localhost:http", Path("localhost:http"), "target.sock"):
        assert FaultProxy(path).target_family == socket.AF_UNIX


@pytest.mark.parametrize("param", ["target", "listen"])
@pytest.mark.parametrize("value", ["localhost:http", "127.0.0.1:", ":8080", "localhost:80x"])
def test_a_host_port_with_a_bad_port_is_not_taken_for_a_socket_path(param: str, value: str):
    args: dict[str, Any] = {"target": "127.0.0.1:9", param: value}
    with pytest.raises(ValueError, match=re.escape(f"{param} {value!r}")) as info:
        FaultProxy(**args)
    message = str(info.value)
    assert "port" in message
    assert f"'./{value}'" in message  # what to write for a Unix socket of that name


@pytest.mark.parametrize("duration", ["-1", "nan", "inf", "0"])
def test_cli_bad_duration_is_one_line_and_exit_2(capsys, duration: str):
    assert main(["proxy", "127.0.0.1", "0", "127.0.0.1", "9", "--duration", duration]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("multiconn: error: --duration must be"), err
    assert duration in err


@pytest.mark.parametrize("spec", ["latency:ms=inf", "latency:ms=nan", "bandwidth:rate=inf",
                                  "latency:ms=-5"])
def test_cli_bad_fault_value_is_one_line_and_exit_2(capsys, spec: str):
    assert main(["proxy", "127.0.0.1", "0", "127.0.0.1", "9", "--fault", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("multiconn: error: "), err
    assert repr(spec) in err, err


# -- one wait mechanism --------------------------------------------------------------------------
class _CountingCondition:
    """The proxy's condition, counting how often a waiter went to sleep on it."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond
        self.waits = 0

    def __enter__(self) -> bool:
        return self.cond.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.cond.__exit__(*exc)

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return self.cond.wait(timeout)

    def notify_all(self) -> None:
        self.cond.notify_all()


def test_waits_sleep_until_signalled_without_polling(multiconn_server):
    with FaultProxy(multiconn_server, timeout=WAIT) as proxy:
        counting = _CountingCondition(proxy._cond)
        proxy._cond = counting  # type: ignore[assignment]
        # Nothing happens on this proxy, so nothing signals: one sleep for the whole bound.
        with pytest.raises(WaitTimeout, match="a connection through the proxy"):
            proxy.wait_for_connection(timeout=1.2)
        assert counting.waits == 1
        # And a signal does wake it: a connection arriving ends the wait.
        counting.waits = 0
        result: list[Any] = []
        waiter = threading.Thread(target=lambda: result.append(proxy.wait_for_connection()))
        waiter.start()
        with connect(proxy.address) as sock:
            waiter.join(WAIT)
            assert not waiter.is_alive()
            sock.sendall(b"a")
            assert recv_exactly(sock, 1) == b"a"
        assert result
        assert result[0].number == 1


def test_proxy_waits_are_the_services_wait(multiconn_server):
    """The proxy's waits are LoopService's one wait: a stopped proxy cannot change, so a wait
    on it fails at once, naming why; a wait bound that is not a positive finite number of
    seconds is refused where it is given; a timeout says what it waited for and shows the
    proxy's report (its faults and connections)."""
    proxy = FaultProxy(multiconn_server, timeout=WAIT)
    with proxy, connect(proxy.address) as sock:
        handle = proxy.wait_for_connection()
        handle.hold()
        sock.sendall(b"abc")
        assert handle.wait_pending(3, "upstream") == 3
        for bad in (math.inf, math.nan, -1, 0, True, "1"):
            with pytest.raises(ValueError, match=r"^timeout must be"):
                handle.wait_pending(4, "upstream", timeout=bad)
        with pytest.raises(WaitTimeout, match="4 bytes held upstream") as info:
            handle.wait_pending(4, "upstream", timeout=0.2)
        assert "now: 3 bytes held" in str(info.value)
        assert "proxied connection #1" in str(info.value)  # the report
        handle.unhold()
    started = time.monotonic()
    with pytest.raises(WaitImpossible, match="stopped"):
        proxy.wait_for_connection(timeout=WAIT)
    assert time.monotonic() - started < WAIT / 2  # at once, not after the bound
    handle.wait_closed(timeout=0.1)  # done already: a wait that holds returns


# -- transcript_limit=1 --------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2])
def test_tiny_transcript_limit_relays(multiconn_server, limit: int):
    with FaultProxy(multiconn_server, timeout=WAIT, transcript_limit=limit) as proxy:
        MultiConnClient(proxy.address, 3, [b"one", b"two" * 100], timeout=WAIT).run().check()
        handle = proxy.wait_for_connection()
        handle.wait_closed()
        assert len(handle.entries()) <= limit
        assert "earlier entries dropped" in handle.transcript
        proxy.check()

