"""What users touch: package metadata, fixture types and signatures, fixture docs, JUnit XML,
and inner pytester runs that see only the plugins they ask for."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import metadata, requires

import pytest

from pytest_multiconn import MultiConnClient

pytest_plugins = ["pytester"]


def test_pluggy_floor_and_python_classifiers_match_the_code() -> None:
    # pytest 7.4 allows pluggy 1.0/1.1, which crash on hookimpl(wrapper=True).
    reqs = [r.replace(" ", "") for r in requires("pytest-multiconn") or []]
    assert any(r.startswith("pluggy>=1.2") for r in reqs), reqs
    meta = metadata("pytest-multiconn")
    floor = tuple(int(p) for p in meta["Requires-Python"].lstrip(">=").split("."))
    versions = [
        tuple(int(p) for p in c.rsplit("::", 1)[1].strip().split("."))
        for c in meta.get_all("Classifier") or []
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions
    assert min(versions) == floor
    assert sys.version_info[:2] in versions


def test_project_urls_are_declared() -> None:
    urls = metadata("pytest-multiconn").get_all("Project-URL") or []
    if not urls:
        pytest.skip("no public repository address yet: see [project.urls] in pyproject.toml")
    labels = {u.split(",", 1)[0].strip().lower() for u in urls}
    assert {"source", "changelog"} <= labels, urls


def test_repr_of_a_half_built_client_does_not_raise() -> None:
    client = MultiConnClient.__new__(MultiConnClient)
    with pytest.raises(ValueError, match="num_connections"):
        client.__init__(("127.0.0.1", 9), 0)  # type: ignore[misc]
    assert repr(client).startswith("<MultiConnClient to ")
    assert "<MultiConnClient" in repr(MultiConnClient.__new__(MultiConnClient))


def test_fixture_types_are_public_and_annotate_tests(pytester: pytest.Pytester) -> None:
    # messages is the third positional parameter everywhere, as in MultiConnClient.
    pytester.makepyfile(
        """
        from pytest_multiconn import EchoServer
        from pytest_multiconn.faults import HalfClose, Slicer
        from pytest_multiconn.fixtures import (
            Address, ClientRunner, FaultyClientFactory, FaultyServerFactory, ProxyFactory,
            ServerFactory,
        )

        def test_annotated(
            multiconn_server_factory: ServerFactory,
            multiconn_client: ClientRunner,
            multiconn_faulty_client_factory: FaultyClientFactory,
            multiconn_proxy_factory: ProxyFactory,
            multiconn_faulty_server_factory: FaultyServerFactory,
        ) -> None:
            server: EchoServer = multiconn_server_factory("127.0.0.1", 0)
            address: Address = server.address
            proxy = multiconn_proxy_factory(server, ("127.0.0.1", 0))
            results = multiconn_client(proxy.address, 3, [b"abc", b"def"])
            results.check()
            assert [(r.sent, r.received) for r in results] == [(6, 6)] * 3
            client = multiconn_faulty_client_factory(address, 1, [b"xyz"], faults=[HalfClose()])
            assert client.results is not None
            assert (client.results[0].sent, client.results[0].received) == (3, 3)
            chunked = multiconn_faulty_server_factory(Slicer(average_size=2))
            multiconn_client(chunked.address, 1, [b"12345"]).check()
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_fixture_docs_have_no_rest_roles_and_name_the_marker(pytester: pytest.Pytester) -> None:
    text = pytester.runpytest("--fixtures").stdout.str()
    ours = text[text.index("multiconn_") :]
    assert not re.search(r":(class|meth|func|mod|attr|exc):`", ours)
    server_doc = ours[ours.index("multiconn_server ") :].split("\n\n", 1)[0]
    assert "@pytest.mark.multiconn_server(" in " ".join(server_doc.split())


FAILING_WITH_SERVER = """
    def test_echo_is_wrong(multiconn_server, multiconn_client):
        results = multiconn_client(multiconn_server.address, 1, [b"hello"])
        assert results[0].received == 99  # it is 5: the test fails on purpose
"""


def test_report_section_is_in_junit_xml(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING_WITH_SERVER)
    result = pytester.runpytest("--junitxml=report.xml")
    result.assert_outcomes(failed=1)
    tree = ET.parse(pytester.path / "report.xml")  # noqa: S314 - pytest wrote it, just now
    (case,) = tree.iter("testcase")
    # In the <failure> text, where CI pages show it; never a <properties> inside <testcase>,
    # which pytest's own xunit2 schema refuses (issue 22, item 21).
    assert case.find("properties") is None
    failure = case.find("failure")
    assert failure is not None
    value = failure.text or ""
    assert "seed: " in value
    assert "pytest 'test_report_section_is_in_junit_xml.py::test_echo_is_wrong'" in value
    assert "EchoServer" in value


def test_passing_tests_add_nothing_to_junit_xml(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING_WITH_SERVER.replace("== 99", "== 5"))
    pytester.runpytest("--junitxml=report.xml").assert_outcomes(passed=1)
    tree = ET.parse(pytester.path / "report.xml")  # noqa: S314 - pytest wrote it, just now
    (case,) = tree.iter("testcase")
    assert list(case.iter("property")) == []


def test_inner_runs_load_only_the_plugins_they_ask_for(pytester: pytest.Pytester) -> None:
    # Before the conftest's isolation, every entry-point plugin of this environment (xdist,
    # hypothesis, pytest-randomly when installed...) was loaded into inner runs.
    pytester.makepyfile(
        """
        def test_plugins(pytestconfig):
            assert pytestconfig.pluginmanager.list_plugin_distinfo() == []
            assert pytestconfig.pluginmanager.has_plugin("pytest_multiconn.plugin")
            assert not pytestconfig.pluginmanager.has_plugin("randomly")
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
