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


_EVERY_SEEDED_FIXTURE = """
import json, os

def record(name, seeds):
    with open(os.path.join(os.environ["RECORD_TO"], name + ".json"), "w") as f:
        json.dump(seeds, f)

def run(name, server, udp_server, proxies, udp_proxies, clients, faulty_servers, toxiproxy):
    record(name, {
        "proxy": [proxies(server).seed, proxies(server).seed],
        "udp_proxy": [udp_proxies(udp_server).seed],
        "faulty_client": [clients(server.address, 1).seed],
        "faulty_server": [faulty_servers().seed],
        "toxiproxy": [toxiproxy.seed],
    })

def test_one(multiconn_server, multiconn_udp_server, multiconn_proxy_factory,
             multiconn_udp_proxy_factory, multiconn_faulty_client_factory,
             multiconn_faulty_server_factory, multiconn_toxiproxy):
    run("one", multiconn_server, multiconn_udp_server, multiconn_proxy_factory,
        multiconn_udp_proxy_factory, multiconn_faulty_client_factory,
        multiconn_faulty_server_factory, multiconn_toxiproxy)

def test_two(multiconn_server, multiconn_udp_server, multiconn_proxy_factory,
             multiconn_udp_proxy_factory, multiconn_faulty_client_factory,
             multiconn_faulty_server_factory, multiconn_toxiproxy):
    run("two", multiconn_server, multiconn_udp_server, multiconn_proxy_factory,
        multiconn_udp_proxy_factory, multiconn_faulty_client_factory,
        multiconn_faulty_server_factory, multiconn_toxiproxy)
"""


def test_every_fixture_seeds_from_the_run_seed_and_the_test(
    pytester: pytest.Pytester, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One seed policy for every fixture that makes seeded objects (issue 23): the run seed,
    the test's node id and the object's kind and number.  Two tests, and two objects of one
    test, get different seeds; a rerun with the same --multiconn-seed gets the same ones."""
    pytest.importorskip("h11")  # the toxiproxy server's HTTP
    pytester.makepyfile(test_seeded=_EVERY_SEEDED_FIXTURE)
    runs: dict[str, dict[str, dict[str, list[int]]]] = {}
    for name, seed in (("first", "7"), ("again", "7"), ("other", "8")):
        out = tmp_path / name
        out.mkdir()
        monkeypatch.setenv("RECORD_TO", str(out))
        pytester.runpytest("-p", "no:randomly", "--multiconn-seed", seed).assert_outcomes(
            passed=2
        )
        runs[name] = {test: _recorded(out / f"{test}.json") for test in ("one", "two")}
    assert runs["again"] == runs["first"]
    seeds = [s for test in runs["first"].values() for kind in test.values() for s in kind]
    assert len(seeds) == 12
    assert len(set(seeds)) == len(seeds), runs["first"]  # no two objects share a seed
    other = {s for test in runs["other"].values() for kind in test.values() for s in kind}
    assert not other & set(seeds), "another --multiconn-seed gives other seeds"
