"""The ``multiconn`` report section: what a failing network test tells you about the wire."""

from __future__ import annotations

import re

import pytest

from pytest_multiconn.plugin.section import MAX_CONNECTIONS, MAX_LINES, format_section

FAILING_ECHO_TEST = """
import socket

def test_echo_is_wrong(multiconn_server):
    with socket.create_connection(multiconn_server.address, timeout=5) as sock:
        sock.sendall(b"ping, hello")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(1024):
            data += chunk
    assert data == b"pong"
"""


def section_of(text: str) -> str:
    """The text of the first ``multiconn`` section in a pytest run's output."""
    match = re.search(r"-+ multiconn -+\n(.*?)(?=\n[=_-]{5,}|\Z)", text, re.S)
    assert match, f"no multiconn section in:\n{text}"
    return match.group(1)


def test_failing_test_shows_section_with_readable_transcript(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING_ECHO_TEST)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    section = section_of(result.stdout.str())
    lines = section.splitlines()
    assert re.fullmatch(r"seed: (\d+) \(replay with --multiconn-seed \1\)", lines[0]), lines[0]
    assert re.fullmatch(
        r"this test's seed \d+; replay the same chunk boundaries: "
        r"pytest 'test_\w+\.py::test_echo_is_wrong' --multiconn-seed \d+",
        lines.pop(1),
    )
    # The server: its name names the test, its address, and where it came from.
    # (An outer xdist run lends its worker id to this in-process run: "[gw0:test_...]".)
    assert re.match(r"<EchoServer 'multiconn-echo\[(gw\d+:)?test_echo_is_wrong\]-127\.0\.0\.1:\d+' "
                    r"on 127\.0\.0\.1:\d+", lines[1]), lines[1]
    assert "started by fixture 'multiconn_server' during test_" in lines[2]
    assert re.search(r"counters: accepted=1 open=0 closed=1 bytes_in=11 bytes_out=11", section)
    # One connection, and what crossed it, in order, with sizes.
    assert re.search(r"- conn-\d+ peer=\('127\.0\.0\.1', \d+\) in=11 out=11 .*closed: finished",
                     section)
    events = [m.group(1) for m in re.finditer(r"^\s+[\d.]+ms (\S+)", section, re.M)]
    assert events == ["connect", "in", "out", "eof-in", "close"], section
    assert re.search(r"ms in\s+11 B", section)
    assert re.search(r"ms out\s+11 B", section)


def test_passing_test_has_no_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fine(multiconn_server, multiconn_client):
            multiconn_client(multiconn_server.address, 2).check()
        """
    )
    result = pytester.runpytest("-rP")
    result.assert_outcomes(passed=1)
    assert "- multiconn -" not in result.stdout.str()
    assert "seed:" not in result.stdout.str()


def test_trace_option_shows_passing_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fine(multiconn_server, multiconn_client):
            multiconn_client(multiconn_server.address, 2).check()

        def test_unrelated():
            pass
        """
    )
    result = pytester.runpytest("--multiconn-trace")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "multiconn traces of passing tests" in out
    assert "test_trace_option_shows_passing_tests.py::test_fine" in out
    assert "::test_unrelated" not in out  # it used nothing of ours
    assert re.search(r"counters: accepted=2 open=\d closed=\d", out)
    assert len(re.findall(r"- conn-\d+ peer=", out)) == 2


def test_trace_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmulticonn_trace = true\n")
    pytester.makepyfile(
        """
        def test_fine(multiconn_server, multiconn_client):
            multiconn_client(multiconn_server.address, 1).check()
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*multiconn traces of passing tests*", "seed: *"])


def test_trace_with_rP_is_not_shown_twice(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fine(multiconn_server, multiconn_client):
            multiconn_client(multiconn_server.address, 1).check()
        """
    )
    result = pytester.runpytest("--multiconn-trace", "-rP")
    result.assert_outcomes(passed=1)
    assert result.stdout.str().count("seed: ") == 1


def test_section_is_bounded(pytester: pytest.Pytester) -> None:
    # 3 servers x 40 connections x 30 chunks each: far more than anyone reads.
    pytester.makepyfile(
        """
        import pytest

        def test_many(multiconn_server_factory, multiconn_client):
            messages = [bytes([65 + i % 26]) * 200 for i in range(30)]
            for _ in range(3):
                server = multiconn_server_factory()
                multiconn_client(server.address, 40, messages=messages).check()
            pytest.fail("on purpose")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    section = section_of(result.stdout.str())
    assert len(section.splitlines()) <= MAX_LINES
    assert section.count(f"connections: 40, showing the last {MAX_CONNECTIONS}\n") == 3
    assert section.count("<EchoServer ") == 3


def test_section_on_teardown_error_describes_stopped_server(pytester: pytest.Pytester) -> None:
    # The loop thread's error is re-raised by the fixture's teardown, after the server
    # stopped: the section is then built from the stopped server.
    pytester.makepyfile(
        """
        import pytest

        def boom(event, conn, data):
            if event == "data":
                raise RuntimeError("observer failed on purpose")

        @pytest.mark.multiconn_server(on_event=boom)
        def test_loop_error(multiconn_server, multiconn_client):
            multiconn_client(multiconn_server.address, 1, timeout=5)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "observer failed on purpose" in out
    section = section_of(out)
    assert "(stopped)" in section
    assert "counters: accepted=1" in section


def test_section_does_not_hang_on_a_stuck_loop(pytester: pytest.Pytester) -> None:
    # The loop thread is blocked when the report is made; the section says so within its
    # bound instead of waiting for the loop (the test then unblocks it at teardown).
    pytester.makepyfile(
        """
        import socket, threading
        import pytest

        release = threading.Event()

        def block(event, conn, data):
            if event == "data":
                release.wait(30)

        @pytest.fixture
        def unblock():
            yield
            release.set()

        @pytest.mark.multiconn_server(on_event=block)
        def test_stuck(multiconn_server, unblock):  # unblock is torn down first
            with socket.create_connection(multiconn_server.address, timeout=5) as sock:
                sock.sendall(b"x")
                multiconn_server.wait_for_bytes(1)
                pytest.fail("on purpose, with the loop blocked")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    section = section_of(result.stdout.str())
    assert "counters unavailable: LoopStuckError" in section


def test_seed_in_section_is_the_run_seed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(FAILING_ECHO_TEST)
    monkeypatch.setenv("PYTEST_MULTICONN_SEED", "4242")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert section_of(result.stdout.str()).startswith(
        "seed: 4242 (replay with --multiconn-seed 4242)"
    )


def test_section_survives_xdist(pytester: pytest.Pytester) -> None:
    # Reports travel from the worker to the controller serialised: the section must too.
    pytester.makepyfile(FAILING_ECHO_TEST)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    section = section_of(result.stdout.str())
    assert re.search(r"'multiconn-echo\[gw\d:test_echo_is_wrong\]-127\.0\.0\.1:\d+'", section)
    assert re.search(r"ms in\s+11 B", section)


def test_setup_failure_of_our_fixture_still_reports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.multiconn_server(max_connections=0)
        def test_bad_option(multiconn_server):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "max_connections must be an integer >= 1" in out
    assert "no server or proxy was started by this test" in section_of(out)


def test_format_section_describes_server_like_objects() -> None:
    class Info:
        def __init__(self, n: int) -> None:
            self.transcript = "\n".join(f"  {i:8.2f}ms in {i} B" for i in range(30))
            self.n = n

        def __str__(self) -> str:
            return f"link-{self.n}"

    class Gateway:
        address = ("::1", 8443)

        def __repr__(self) -> str:
            return "<Gateway on [::1]:8443>"

        def stats(self) -> str:
            return "gateway stats: 3 links"

        def recently_closed(self) -> list[Info]:
            return [Info(1), Info(2)]

        def connections(self) -> list[Info]:
            return [Info(3)]

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

        def stats(self) -> None:
            raise OSError("stats failed on purpose")

    text = format_section([Gateway(), Broken()], seed=7)
    lines = text.splitlines()
    assert lines[0] == "seed: 7 (replay with --multiconn-seed 7)"
    assert lines[1] == "<Gateway on [::1]:8443>"
    assert "  counters: 'gateway stats: 3 links'" in lines
    assert "  connections: 3" in lines
    assert [line for line in lines if line.startswith("  - ")] == [
        "  - link-1", "  - link-2", "  - link-3"
    ]
    # 30 transcript lines each, cut to the first 3 and the last 10.
    assert text.count("... 17 transcript lines cut ...") == 3
    assert any(line.startswith("<") and "Broken object at" in line for line in lines)
    assert "  (counters unavailable: OSError: stats failed on purpose)" in lines
    assert format_section([], seed=1).splitlines()[1] == (
        "no server or proxy was started by this test"
    )


def test_section_includes_a_server_process_and_its_output(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fails(multiconn_server_process, multiconn_client):
            multiconn_client(multiconn_server_process.address, 1).check()
            assert False, "on purpose"
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    section = section_of(result.stdout.str())
    assert re.search(r"<ServerProcess pid=\d+ on \('127\.0\.0\.1', \d+\)>", section)
    assert "last output (" in section
    assert "Listening on ('127.0.0.1'," in section
