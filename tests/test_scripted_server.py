"""The scripted server: clients of raw TCP protocols tested against a script."""

from __future__ import annotations

import contextlib
import inspect
import socket

import pytest

from helpers import recv_until_eof
from pytest_multiconn.errors import ScriptMismatch
from pytest_multiconn.servers import (
    Abort,
    Close,
    Expect,
    Hang,
    Pause,
    Reply,
    ScriptedServer,
    WriteEOF,
)

redis = pytest.importorskip("redis")

PING = b"*1\r\n$4\r\nPING\r\n"

# RESP2 and no CLIENT SETINFO on connect, so the script starts with the test's own command
# (newer redis-py spells "no SETINFO" driver_info=None, older lib_name=None).
QUIET: dict[str, object] = {"protocol": 2, "socket_timeout": 5}
if "driver_info" in inspect.signature(redis.Redis).parameters:
    QUIET["driver_info"] = None
else:  # pragma: no cover - older redis-py
    QUIET.update(lib_name=None, lib_version=None)


def test_redis_py_against_a_scripted_resp_server() -> None:
    script = [
        Expect(data=PING),
        Reply(b"+PONG\r\n"),
        Expect(regex=rb"\*3\r\n\$3\r\nSET\r\n.*", until=b"v\r\n"),
        Reply(b"+OK\r\n"),
        Expect(data=b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        Pause(0.01),
        Reply(b"$1\r\nv\r\n"),
    ]
    with ScriptedServer(script) as server:
        client = redis.Redis(host=server.host, port=server.port, **QUIET)
        try:
            assert client.ping() is True
            assert client.set("k", "v") is True
            assert client.get("k") == b"v"
            server.wait_for_scripts(1)
        finally:
            client.close()


def test_reset_mid_reply_shows_redis_pys_real_error() -> None:
    script = [Expect(data=b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), Reply(b"$10\r\nabc"), Abort()]
    with ScriptedServer(script) as server:
        client = redis.Redis(host=server.host, port=server.port, **QUIET,
                             retry_on_error=[], retry=None)
        try:
            with pytest.raises(redis.exceptions.ConnectionError) as info:
                client.get("k")
        finally:
            client.close()
    assert "reset" in str(info.value).lower() or "closed" in str(info.value).lower()


def test_unexpected_bytes_fail_in_the_test_with_both_sides() -> None:
    server = ScriptedServer([Expect(line=b"HELLO"), Reply(b"WORLD\n")]).start()
    try:
        with socket.create_connection(server.address, 5) as sock:
            sock.sendall(b"HELXO\n")
            assert sock.recv(100) in (b"",)  # the script reset the connection
    except ConnectionResetError:
        pass
    finally:
        server.stop()
    with pytest.raises(ScriptMismatch) as info:
        server.check()
    text = str(info.value)
    assert "connection 1, step 0: Expect(line=b'HELLO')" in text
    assert "first differing byte at 3" in text
    assert "the client sent: b'HELXO\\n'" in text


def test_per_connection_scripts_cycle_half_close_and_stall() -> None:
    scripts = [
        [Expect(n=3), Reply(lambda got: got[::-1]), WriteEOF(), Expect(any_line=True), Close()],
        [Expect(data=b"x"), Hang()],
    ]
    with ScriptedServer(scripts=scripts, cycle=True) as server:
        with socket.create_connection(server.address, 5) as a:
            a.sendall(b"abc")
            assert a.recv(3) == b"cba"
            assert a.recv(1) == b""  # the half-close
            a.sendall(b"bye\n")
            assert recv_until_eof(a) == b""
        with socket.create_connection(server.address, 5) as b:
            b.sendall(b"x")
            server.wait_for(lambda s: server.completed >= 2, 5, "the stall")
            b.settimeout(0.05)
            with pytest.raises(TimeoutError):
                b.recv(1)  # stalled: no answer, no close
        with socket.create_connection(server.address, 5) as c:  # the cycle starts over
            c.sendall(b"xyz")
            assert c.recv(3) == b"zyx"
            c.sendall(b"end\n")
            assert recv_until_eof(c) == b""
        server.wait_for(lambda s: server.completed >= 3, 5, "three scripts")


def test_extra_connection_and_bytes_after_the_end_are_failures() -> None:
    server = ScriptedServer(scripts=[[Expect(data=b"a")]]).start()
    try:
        with socket.create_connection(server.address, 5) as one:
            one.sendall(b"ab")
            server.wait_for(lambda s: bool(server.failures), 5, "a failure")
        extra = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        extra.settimeout(5)
        try:
            # The server may reset this unexpected connection before connect() returns here:
            # what the test checks is that the server recorded it.
            with contextlib.suppress(ConnectionResetError):
                extra.connect(server.address)
            server.wait_for(lambda s: len(server.failures) >= 2, 5, "two failures")
        finally:
            extra.close()
    finally:
        server.stop()
    text = "\n".join(str(f) for f in server.failures)
    assert "sent 1 B after the script ended: b'b'" in text
    assert "connection 2: unexpected connection: the script covers 1 connection" in text


def test_expect_timeout_names_the_step() -> None:
    server = ScriptedServer([Expect(data=b"hello")], expect_timeout=0.05).start()
    try:
        with socket.create_connection(server.address, 5) as sock:
            sock.sendall(b"he")
            server.wait_for(lambda s: bool(server.failures), 5, "the expect timeout")
    finally:
        server.stop()
    assert "still waiting after 0.05s; the client sent b'he'" in str(server.failures[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of"),
        ({"data": b"a", "n": 1}, "exactly one of"),
        ({"n": 0}, "n must be an integer >= 1"),
        ({"n": True}, "n must be an integer >= 1"),
        ({"data": b""}, "must not be empty"),
    ],
)
def test_expect_validates(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Expect(**kwargs)  # type: ignore[arg-type]


def test_script_validation() -> None:
    with pytest.raises(ValueError, match="seconds"):
        Pause(float("nan"))
    with pytest.raises(ValueError, match="seconds"):
        Pause(-1)
    with pytest.raises(TypeError, match="not a script step"):
        ScriptedServer([b"PING"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"either script= .* or scripts="):
        ScriptedServer()
    with pytest.raises(ValueError, match="expect_timeout"):
        ScriptedServer([], expect_timeout=float("inf"))
