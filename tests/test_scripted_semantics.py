"""The scripted server's promises: every script runs to its end or the test fails, intake is
linear and bounded, waits have awaitable twins.  Over real loopback sockets."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from helpers import WAIT, recv_exactly
from pytest_multiconn.errors import ScriptMismatch
from pytest_multiconn.servers import Close, Expect, Reply, ScriptedServer

pytest_plugins = ["pytester"]


# -- a script that never ran fails (issue 22, item 3) ------------------------------------------


def _converse(server: ScriptedServer, send: bytes, reply: bytes) -> None:
    with socket.create_connection(server.address, WAIT) as sock:
        sock.sendall(send)
        assert recv_exactly(sock, len(reply)) == reply
        assert sock.recv(1) == b""  # Close()


def test_a_scripts_entry_whose_connection_never_came_fails_naming_it() -> None:
    server = ScriptedServer(
        scripts=[
            [Expect(line=b"HELLO"), Reply(b"HI\n"), Close()],
            [Expect(line=b"RETRY"), Reply(b"OK\n"), Close()],
        ]
    ).start()
    try:
        _converse(server, b"HELLO\n", b"HI\n")
        server.wait_for_scripts(1)
        server.check()  # while it runs, a script not run yet is no failure
    finally:
        server.stop()
    with pytest.raises(ScriptMismatch) as info:
        server.check()
    text = str(info.value)
    assert "scripts[1]" in text, text
    assert "no connection came" in text, text
    assert "step 0: Expect(line=b'RETRY') not reached" in text, text
    assert "scripts[0]" not in text, text


def test_a_script_nobody_connects_to_fails_at_the_end_of_with() -> None:
    with (
        pytest.raises(ScriptMismatch, match=r"script .*no connection came.*step 0: "
                      r"Expect\(line=b'PING'\) not reached"),
        ScriptedServer([Expect(line=b"PING"), Reply(b"PONG\n")]),
    ):
        pass


def test_cycle_needs_every_script_once() -> None:
    server = ScriptedServer(
        scripts=[[Expect(data=b"a"), Reply(b"A"), Close()], [Expect(data=b"b"), Close()]],
        cycle=True,
    ).start()
    try:
        _converse(server, b"a", b"A")
    finally:
        server.stop()
    with pytest.raises(ScriptMismatch, match=r"scripts\[1\].*step 0: Expect\(b'b'\)"):
        server.check()


@pytest.mark.parametrize("optional", [True, [1], (1,), {1}])
def test_optional_scripts_may_go_unused(optional: object) -> None:
    with ScriptedServer(
        scripts=[[Expect(data=b"a"), Reply(b"A"), Close()], [Expect(data=b"b"), Close()]],
        optional=optional,  # type: ignore[arg-type]
    ) as server:
        _converse(server, b"a", b"A")
        server.wait_for_scripts(1)


def test_optional_does_not_excuse_a_script_that_did_not_end() -> None:
    server = ScriptedServer([Expect(data=b"ab"), Close()], optional=True).start()
    try:
        with socket.create_connection(server.address, WAIT) as sock:
            sock.sendall(b"a")
            server.wait_for_bytes(1)
            server.stop()  # while the script waits for b"b"
    finally:
        server.stop()
    with pytest.raises(ScriptMismatch, match=r"connection 1, step 0: the connection ended at "
                       r"Expect\(b'ab'\) \(server stopped\)"):
        server.check()


@pytest.mark.parametrize(
    ("optional", "match"),
    [
        ("yes", "optional must be True, False or a collection of script indexes"),
        ([2], r"optional names scripts\[2\], but there are 2 scripts"),
        ([-1], r"optional names scripts\[-1\]"),
        ([True], r"optional\[0\] \(a script index\) must be an integer >= -2, got True"),
        (["0"], r"optional\[0\] must be a script index \(an int\), got '0'"),
    ],
)
def test_optional_is_validated(optional: object, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        ScriptedServer(scripts=[[Close()], [Close()]], optional=optional)  # type: ignore[arg-type]


def test_fixture_fails_a_script_that_never_ran_and_takes_the_opt_out(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn.servers import Close, Expect, Reply

        def talk(server, data):
            with socket.create_connection(server.address, timeout=5) as sock:
                sock.sendall(data)
                return sock.recv(10)

        def test_nobody_connects(multiconn_scripted_server_factory):
            multiconn_scripted_server_factory([Expect(line=b"PING"), Reply(b"PONG\\n")])

        def test_second_script_never_runs(multiconn_scripted_server_factory):
            server = multiconn_scripted_server_factory(
                scripts=[[Expect(data=b"a"), Reply(b"A"), Close()],
                         [Expect(data=b"b"), Reply(b"B"), Close()]])
            assert talk(server, b"a") == b"A"

        def test_opted_out(multiconn_scripted_server_factory):
            server = multiconn_scripted_server_factory(
                scripts=[[Expect(data=b"a"), Reply(b"A"), Close()],
                         [Expect(data=b"b"), Reply(b"B"), Close()]], optional=[1])
            assert talk(server, b"a") == b"A"
            multiconn_scripted_server_factory([Expect(data=b"x")], optional=True)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_nobody_connects*",
            "*ScriptMismatch*",
            "*script (every connection): no connection came*step 0: "
            "Expect(line=b'PING') not reached*",
            "*ERROR at teardown of test_second_script_never_runs*",
            "*scripts[[]1[]]: no connection came*step 0: Expect(b'b') not reached*",
        ]
    )


# -- intake: linear, and bounded (issue 22, item 5) --------------------------------------------


class CountingBuffer(bytearray):
    """The scripted connection's intake buffer, counting the bytes each read costs: the bytes
    scanned by ``find`` and copied by ``bytes()`` or a slice."""

    work = 0

    def __bytes__(self) -> bytes:
        CountingBuffer.work += len(self)
        return bytes(memoryview(self))

    def find(self, sub: Any, *args: Any) -> int:
        start = args[0] if args else 0
        CountingBuffer.work += max(0, len(self) - (start or 0))
        return super().find(sub, *args)

    def __getitem__(self, key: Any) -> Any:
        got = super().__getitem__(key)
        if isinstance(key, slice):
            CountingBuffer.work += len(got)
        return got


@pytest.fixture
def counted_intake(monkeypatch: pytest.MonkeyPatch) -> type[CountingBuffer]:
    from pytest_multiconn.servers import scripted

    original = scripted.ScriptedConnection.__init__

    def init(self: scripted.ScriptedConnection, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.buffer = CountingBuffer()

    monkeypatch.setattr(scripted.ScriptedConnection, "__init__", init)
    CountingBuffer.work = 0
    return CountingBuffer


@pytest.mark.parametrize(
    "expect",
    [
        Expect(any_line=True),
        Expect(regex=rb"x*\n", until=b"\n"),
        Expect(n=1024 * 1024 + 1),
    ],
    ids=["line", "regex", "n"],
)
def test_intake_work_is_linear_in_the_bytes_received(
    counted_intake: type[CountingBuffer], expect: Expect
) -> None:
    # 1024 reads of 1 KiB each (the test waits for each to arrive before sending the next):
    # a full copy or a search from the start on every read costs ~512 MiB of work; a
    # linear intake about 1 MiB (plus the matched chunk, copied once).
    chunk, chunks = b"x" * 1024, 1024
    with ScriptedServer([expect, Reply(b"ok\n"), Close()]) as server, socket.create_connection(
        server.address, WAIT
    ) as sock:
        for i in range(1, chunks + 1):
            sock.sendall(chunk)
            server.wait_for_bytes(i * len(chunk))
        sock.sendall(b"\n")
        assert recv_exactly(sock, 3) == b"ok\n"
        server.wait_for_scripts(1)
    total = chunks * len(chunk) + 1
    assert counted_intake.work <= 4 * total, (
        f"{counted_intake.work} bytes of work for {total} bytes received: not linear"
    )


def test_an_upload_past_max_buffer_fails_naming_the_step_and_the_limit() -> None:
    limit = 64 * 1024
    server = ScriptedServer(
        [Expect(line=b"HELLO"), Expect(regex=rb"PUT .*", until=b"\r\n"), Reply(b"OK\r\n")],
        max_buffer=limit,
    ).start()
    try:
        with socket.create_connection(server.address, WAIT) as sock:
            sock.sendall(b"HELLO\n")
            block = b"y" * 65536
            try:  # 8 MiB without the terminator: the server gives up at the limit
                for _ in range(128):
                    sock.sendall(block)
            except OSError:  # the server's reset
                pass
            server.wait_for(lambda s: bool(server.failures), WAIT, "the max_buffer failure")
    finally:
        server.stop()
    (failure,) = server.failures
    text = str(failure)
    assert failure.step == 1, text
    assert "Expect(regex=b'PUT .*')" in text, text
    assert f"max_buffer={limit}" in text, text
    # What the failure keeps of the upload is bounded too.
    assert len(failure.received) <= 2 * limit, len(failure.received)
    with pytest.raises(ScriptMismatch, match="max_buffer=65536"):
        server.check()


@pytest.mark.parametrize(
    ("step", "needs"),
    [
        (Expect(n=10**10), "10000000000"),
        (Expect(data=b"z" * 2000), "2000"),
        (Expect(line=b"L" * 2000), "2001"),
    ],
)
def test_a_step_that_cannot_fit_max_buffer_is_refused_at_construction(
    step: Expect, needs: str
) -> None:
    with pytest.raises(ValueError, match=rf"scripts\[1\]\[0\]: .*needs {needs} B.*max_buffer=1024"):
        ScriptedServer(scripts=[[Close()], [step]], max_buffer=1024)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_max_buffer_is_validated(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="max_buffer"):
        ScriptedServer([Close()], max_buffer=bad)  # type: ignore[arg-type]
