"""Options and ini keys: checked once at start-up, typed where pytest has types, and the
bound of every wait that fixture-made objects do."""

from __future__ import annotations

import json
import re

import pytest

pytest_plugins = ["pytester"]

USAGE_ERROR = pytest.ExitCode.USAGE_ERROR

# Command-line usage errors run in a subprocess: in-process, pytest 7.4 with pluggy >= 1.4
# turns argparse's exit inside a hook wrapper into a PluggyTeardownRaisedWarning, which
# this suite's filterwarnings=error would report instead of the usage error.

PASSING = "def test_nothing():\n    pass\n"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc", "1e12"])
def test_bad_timeout_flag_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess(f"--multiconn-timeout={value}")
    assert result.ret == USAGE_ERROR
    err = result.stderr.str()
    assert "--multiconn-timeout" in err
    assert f"got {value!r}" in err
    assert "invalid" not in err.replace("is invalid", "")  # no "invalid <function> value"


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_bad_timeout_ini_key_is_a_usage_error_at_start_up(
    pytester: pytest.Pytester, value: str
) -> None:
    pytester.makeini(f"[pytest]\nmulticonn_timeout = {value}\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest()
    assert result.ret == USAGE_ERROR
    err = result.stderr.str()
    assert "ini key multiconn_timeout" in err
    assert value in err
    # Refused before any test ran, not reported by each test that reads it.
    assert "passed" not in result.stdout.str()
    assert "failed" not in result.stdout.str()


def test_negative_seed_is_one_clear_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess("--multiconn-seed=-5")
    assert result.ret == USAGE_ERROR
    err = result.stderr.str()
    assert "--multiconn-seed: a seed is a non-negative integer, got '-5'" in err
    assert "_seed_type" not in err
    assert "invalid" not in err


def test_bad_seed_ini_key_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmulticonn_seed = x\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest()
    assert result.ret == USAGE_ERROR
    assert "ini key multiconn_seed" in result.stderr.str()


def test_seed_and_timeout_from_an_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmulticonn_seed = 42\nmulticonn_timeout = 3\n")
    pytester.makepyfile(
        """
        from pytest_multiconn.core.seed import get_run_seed

        def test_values(multiconn_timeout):
            assert multiconn_timeout == 3.0
            assert get_run_seed() == 42
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["multiconn: run seed 42 *"])


@pytest.mark.skipif(
    int(pytest.__version__.split(".")[0]) < 9, reason="the native [tool.pytest] table is pytest 9"
)
def test_native_toml_table_takes_numbers(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".toml", pyproject="[tool.pytest]\nmulticonn_seed = 42\nmulticonn_timeout = 3\n"
    )
    pytester.makepyfile(
        """
        from pytest_multiconn.core.seed import get_run_seed

        def test_values(multiconn_timeout):
            assert multiconn_timeout == 3.0
            assert get_run_seed() == 42
        """
    )
    result = pytester.runpytest("--strict-config")
    result.assert_outcomes(passed=1)


def test_help_shows_the_real_default_of_the_seed(pytester: pytest.Pytester) -> None:
    text = " ".join(pytester.runpytest("--help").stdout.str().split())
    assert "(default: None)" not in text
    assert "a new random seed each run" in text


TIMEOUT_BOUNDS = """
    import pytest
    from pytest_multiconn import WaitTimeout
    from pytest_multiconn.faults import NeverClose

    def test_server_wait(multiconn_server):
        with pytest.raises(WaitTimeout, match=r"after 1(\\.0)?s"):
            multiconn_server.wait_for_connections(1)

    def test_factory_and_faulty_server_waits(
        multiconn_server_factory, multiconn_faulty_server_factory
    ):
        for server in (multiconn_server_factory(), multiconn_faulty_server_factory()):
            with pytest.raises(WaitTimeout, match=r"after 1(\\.0)?s"):
                server.wait_for_accepted(1)

    def test_session_server_wait(multiconn_session_server):
        with pytest.raises(WaitTimeout, match=r"after 1(\\.0)?s"):
            multiconn_session_server.wait_for_closed(10**6)

    def test_proxy_wait(multiconn_server, multiconn_proxy_factory):
        proxy = multiconn_proxy_factory(multiconn_server)
        with pytest.raises(WaitTimeout, match=r"after 1(\\.0)?s"):
            proxy.wait_for_connection()

    def test_faulty_client_wait(multiconn_server, multiconn_faulty_client_factory):
        # The echo server never closes a client that never closes: the wait runs out.
        client = multiconn_faulty_client_factory(multiconn_server.address, 1, faults=[NeverClose()])
        with pytest.raises(WaitTimeout, match=r"within 1\\.0s"):
            client.wait_closed_by_peer()
"""


def test_timeout_option_bounds_waits_of_fixture_made_objects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TIMEOUT_BOUNDS)
    # 1 s, not less: the faulty client's exchange must still finish within it under load.
    result = pytester.runpytest("--multiconn-timeout=1")
    result.assert_outcomes(passed=5)


def test_an_explicit_timeout_still_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_multiconn import WaitTimeout

        def test_explicit(multiconn_server):
            with pytest.raises(WaitTimeout, match=r"after 0\\.1s"):
                multiconn_server.wait_for_connections(1, timeout=0.1)
        """
    )
    pytester.runpytest("--multiconn-timeout=30").assert_outcomes(passed=1)


def test_marker_typo_names_the_marker_and_the_known_keys(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.multiconn_server(idle_timout=0.5)
        def test_plain(multiconn_server):
            pass

        @pytest.mark.multiconn_server(idle_timout=0.5)
        def test_tls(multiconn_tls_server):
            pass

        @pytest.mark.multiconn_server(0.5)
        def test_positional(multiconn_server):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=3)
    out = result.stdout.str()
    # One error report per test; the short summary repeats the message in full when CI is set
    # (pytest does not truncate it there), so count in the reports above the summary only.
    reports = out.split("short test summary info")[0]
    assert reports.count("@pytest.mark.multiconn_server(...) on test_marker_typo") == 3
    assert "unknown keyword(s) 'idle_timout'" in out
    known = re.search(r"the known keywords are ([^\n]*)", out)
    assert known is not None
    assert "idle_timeout" in known.group(1)
    assert "max_connections" in known.group(1)
    assert "positional arguments (0.5,)" in out
    assert "TypeError" not in out


LOADGROUP_TEST = """
    import json, os
    import pytest
    from pytest_multiconn.core.seed import default_seed

    @pytest.mark.xdist_group("g")
    def test_grouped(multiconn_server, multiconn_faulty_client_factory,
                     multiconn_faulty_server_factory):
        client = multiconn_faulty_client_factory(multiconn_server.address, 1)
        server = multiconn_faulty_server_factory()
        where = os.environ["RECORD_TO"] + "-" + os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(where, "w") as f:
            json.dump([client.seed, server.seed, default_seed()], f)
        assert False, "fail to print the report section"
"""


def test_loadgroup_keeps_seeds_and_replay_command(
    pytester: pytest.Pytester, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_grouped=LOADGROUP_TEST)
    seen: dict[str, list[int]] = {}
    replay: dict[str, str] = {}
    for mode, args in {
        "serial": ["-n", "0"],
        "loadgroup": ["-n", "2", "--dist", "loadgroup"],
    }.items():
        monkeypatch.setenv("RECORD_TO", str(tmp_path / mode))
        result = pytester.runpytest_subprocess(
            "-p", "xdist", "-p", "no:cacheprovider", "--multiconn-seed", "7", *args
        )
        result.assert_outcomes(failed=1)
        (record,) = tmp_path.glob(f"{mode}-*")
        seen[mode] = json.loads(record.read_text())
        match = re.search(r"chunk boundaries: pytest '([^']+)'", result.stdout.str())
        assert match is not None, result.stdout.str()
        replay[mode] = match.group(1)
    assert seen["loadgroup"] == seen["serial"]
    assert replay["loadgroup"] == replay["serial"] == "test_grouped.py::test_grouped"
    # The printed command runs the test (a node id with "@g" would be "not found").
    monkeypatch.setenv("RECORD_TO", str(tmp_path / "replay"))
    again = pytester.runpytest_subprocess(
        replay["loadgroup"], "-p", "no:cacheprovider", "--multiconn-seed", "7"
    )
    again.assert_outcomes(failed=1)
    (record,) = tmp_path.glob("replay-*")
    assert json.loads(record.read_text()) == seen["serial"]
