"""The run seed: header, option and ini key, failing reports, replay, xdist workers."""

from __future__ import annotations

import pytest

_RECORDING_TEST = """
import json, os
from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.faults.client import Garbage, PartialSend
from pytest_multiconn.core.seed import get_run_seed

def test_record(tmp_path_factory):
    with EchoServer() as srv:
        res = MultiConnClient(srv.address, 2, faults=[Garbage(300), PartialSend(max_chunk=7)]).run()
    res.check()
    out = os.environ["RECORD_TO"]
    with open(out + "-" + os.environ.get("PYTEST_XDIST_WORKER", "main"), "w") as f:
        json.dump({"seed": get_run_seed(), "sizes": [list(r.send_sizes) for r in res]}, f)
"""


def _recorded(path) -> dict:
    import json

    return json.loads(path.read_text())


def test_header_shows_seed_given_on_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest("--multiconn-seed", "4242")
    result.stdout.fnmatch_lines(["multiconn: run seed 4242 (replay with --multiconn-seed 4242)"])
    result.assert_outcomes(passed=1)


def test_ini_key_sets_seed(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmulticonn_seed = 77\n")
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["multiconn: run seed 77 *"])


def test_bad_seed_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest("--multiconn-seed", "-3")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*multiconn-seed*"])


def test_failing_report_names_the_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_multiconn import MultiConnClient
        from pytest_multiconn.faults.client import PartialSend

        def test_fails(multiconn_server):
            MultiConnClient(multiconn_server.address, 1, faults=[PartialSend(2)]).run().check()
            assert False, "boom"
        """
    )
    result = pytester.runpytest("--multiconn-seed", "99")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*- multiconn -*",
        "seed: 99 (replay with --multiconn-seed 99)",
        "this test's seed *; replay the same chunk boundaries: pytest '*test_fails' "
        "--multiconn-seed 99",
    ])


def test_rerun_with_seed_replays_chunk_boundaries(
    pytester: pytest.Pytester, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(_RECORDING_TEST)
    runs = {}
    monkeypatch.delenv("PYTEST_MULTICONN_SEED", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # when this run itself uses -n
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        monkeypatch.setenv("RECORD_TO", str(tmp_path / name))
        pytester.runpytest_subprocess("--multiconn-seed", seed).assert_outcomes(passed=1)
        runs[name] = _recorded(tmp_path / f"{name}-main")
    assert runs["a"] == runs["b"]
    assert runs["a"]["sizes"] != runs["c"]["sizes"]
    assert max(max(s) for s in runs["a"]["sizes"]) <= 7


def test_xdist_workers_share_the_controllers_seed(
    pytester: pytest.Pytester, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_one=_RECORDING_TEST,
        test_two=_RECORDING_TEST.replace("test_record", "test_record_two"),
    )
    monkeypatch.delenv("PYTEST_MULTICONN_SEED", raising=False)
    monkeypatch.setenv("RECORD_TO", str(tmp_path / "x"))
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=2)
    seeds = {_recorded(p)["seed"] for p in tmp_path.glob("x-gw*")}
    assert len(seeds) == 1, seeds
    header_seed = next(
        line for line in result.stdout.lines if line.startswith("multiconn: run seed")
    ).split()[3]
    assert seeds == {int(header_seed)}


def test_fault_fixture_ids_are_fault_names(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_f(multiconn_fault): pass")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "*test_f[[]partial_send[]]", "*test_f[[]half_close[]]", "*test_f[[]connect_close[]]",
    ])
