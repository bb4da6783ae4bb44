"""The scripted server's promises: every script runs to its end or the test fails, intake is
linear and bounded, waits have awaitable twins.  Over real loopback sockets."""

from __future__ import annotations

import socket

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
        ([True], "optional must be True, False or a collection of script indexes"),
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

        def test_nobody_connects(multiconn_scripted_server):
            multiconn_scripted_server([Expect(line=b"PING"), Reply(b"PONG\\n")])

        def test_second_script_never_runs(multiconn_scripted_server):
            server = multiconn_scripted_server(
                scripts=[[Expect(data=b"a"), Reply(b"A"), Close()],
                         [Expect(data=b"b"), Reply(b"B"), Close()]])
            assert talk(server, b"a") == b"A"

        def test_opted_out(multiconn_scripted_server):
            server = multiconn_scripted_server(
                scripts=[[Expect(data=b"a"), Reply(b"A"), Close()],
                         [Expect(data=b"b"), Reply(b"B"), Close()]], optional=[1])
            assert talk(server, b"a") == b"A"
            multiconn_scripted_server([Expect(data=b"x")], optional=True)
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
