"""``multiconn server/client/suite --protocol`` and the plugin's protocol fixtures."""

from __future__ import annotations

import pytest

from pytest_multiconn.cli import main
from pytest_multiconn.core.process import ServerProcess
from pytest_multiconn.exchanges import HTTP, RESP, Lines
from pytest_multiconn.suite import run_checks


@pytest.mark.parametrize(("protocol", "exchange"), [
    ("line", Lines()), ("http", HTTP()), ("redis", RESP()),
])
def test_cli_server_protocol_serves_it(protocol: str, exchange: object,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with ServerProcess(args=["--protocol", protocol]) as proc:
        assert main(["client", "127.0.0.1", str(proc.port), "3", "--protocol", protocol]) == 0
        out = capsys.readouterr().out
        assert "3 of 3 connections got a right reply" in out
        report = run_checks(proc.address, exchange, seed=4,  # type: ignore[arg-type]
                            only=["exchange", "pipelining", "half_close"])
        assert report.ok, report.table()


def test_cli_client_protocol_reports_a_wrong_reply(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerProcess(args=["--protocol", "line"]) as proc:
        status = main(["client", "127.0.0.1", str(proc.port), "1", "--protocol", "exact",
                       "--send", "ping\\n", "--expect", "PONG\\n"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED: reply 0 to b'ping\\n': first differing byte at 0" in out


def test_cli_suite_protocol_exact_with_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerProcess(args=["--protocol", "redis"]) as proc:
        status = main(["suite", "127.0.0.1", str(proc.port), "--protocol", "redis", "--send",
                       "PING", "--expect", "+PONG\\r\\n", "--only", "exchange", "--seed", "5"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "OK: all 1 checks passed (seed 5)" in out


def test_cli_suite_failure_prints_a_replay_command(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerProcess(args=["--protocol", "line"]) as proc:
        status = main(["suite", "127.0.0.1", str(proc.port), "--protocol", "exact", "--send",
                       "a\\n", "--expect", "b\\n", "--only", "exchange", "--seed", "6"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"multiconn suite 127.0.0.1 {proc.port} --protocol exact" in out
    assert "--seed 6" in out


def test_bad_protocol_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suite", "127.0.0.1", "1", "--protocol", "smtp"]) == 2
    assert main(["suite", "127.0.0.1", "1", "--protocol", "exact", "--send", "x"]) == 2
    assert "needs both --send and --expect" in capsys.readouterr().err


def test_marker_protocol_and_scripted_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        import pytest
        from pytest_multiconn import MultiConnClient
        from pytest_multiconn.exchanges import Lines
        from pytest_multiconn.servers import Expect, Reply

        @pytest.mark.multiconn_server(protocol="line")
        def test_line(multiconn_server):
            MultiConnClient(multiconn_server.address, 2, exchange=Lines()).run().check()

        def test_script_ok(multiconn_scripted_server_factory):
            server = multiconn_scripted_server_factory([Expect(data=b"hi"), Reply(b"yo")])
            with socket.create_connection(server.address, 5) as s:
                s.sendall(b"hi")
                assert s.recv(2) == b"yo"
            server.wait_for_scripts(1)

        def test_script_broken(multiconn_scripted_server_factory):
            server = multiconn_scripted_server_factory([Expect(data=b"hi")])
            with socket.create_connection(server.address, 5) as s:
                s.sendall(b"ho")
                try:
                    s.recv(10)  # the script resets the connection
                except ConnectionResetError:
                    pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)  # the broken script errors at teardown
    result.stdout.fnmatch_lines(["*ScriptMismatch*", "*connection 1, step 0: Expect(b'hi')*"])


def test_multiconn_fault_runs_only_faults_the_exchange_supports(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_multiconn import MultiConnClient
        from pytest_multiconn.exchanges import Lines
        from pytest_multiconn.servers import LineProtocol, ProtocolServer

        @pytest.mark.multiconn_exchange(Lines())
        def test_line_fault(multiconn_fault):
            with ProtocolServer(LineProtocol) as server:
                with MultiConnClient(server.address, 2, exchange=Lines(), requests=3,
                                     faults=[multiconn_fault]) as client:
                    assert client.run().ok
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9, deselected=1)  # every fault but Garbage


# -- without h11 the HTTP server fails at start, naming the extra (issue 22, item 19) ---------

_NO_H11 = "import sys; sys.modules['h11'] = None  # as if the [http] extra were missing\n"


def test_cli_http_server_without_h11_fails_at_start_naming_the_extra() -> None:
    import subprocess
    import sys

    code = _NO_H11 + (
        "from pytest_multiconn.cli import main\n"
        "sys.exit(main(['server', '127.0.0.1', '0', '--protocol', 'http']))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the server started without h11 and served on: {exc.stdout!r}")
    assert done.returncode == 2, done
    assert "Listening" not in done.stdout
    assert "pip install 'pytest-multiconn[http]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_marker_http_without_h11_fails_at_setup_naming_the_extra(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(_NO_H11)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.multiconn_server(protocol="http")
        def test_http(multiconn_server):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.re_match_lines(
        [r".*MissingExtraError: the HTTP server .*pip install 'pytest-multiconn\[http\]'"]
    )
    result.stdout.no_fnmatch_line("*ERROR at teardown*")
