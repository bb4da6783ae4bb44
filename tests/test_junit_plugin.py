"""The plugin's diagnostics in pytest's own JUnit XML (issue 22, item 21).

CI servers show a failing test's ``<failure>`` text (and ``<system-out>``); they do not show
properties, and pytest's xunit2 schema allows none inside a ``<testcase>``.  So the
``multiconn`` section (seed, servers, wire transcripts) belongs in the failure text, and the
file must validate against the JUnit schema pytest tests its own output with
(``tests/data/junit-10.xsd``, vendored from pytest-dev/pytest, MIT).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

XSD = Path(__file__).parent / "data" / "junit-10.xsd"

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

def test_fine(multiconn_server):
    with socket.create_connection(multiconn_server.address, timeout=5) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
"""


def _run(pytester: pytest.Pytester, family: str = "xunit2") -> ET.Element:
    pytester.makepyfile(FAILING_ECHO_TEST)
    result = pytester.runpytest("--junit-xml=report.xml", "-o", f"junit_family={family}")
    result.assert_outcomes(failed=1, passed=1)
    path = pytester.path / "report.xml"
    if family == "xunit2":  # the schema is xunit2's: xunit1 adds file= and line= to testcases
        xmlschema.XMLSchema(XSD).validate(path)  # raises, naming the element, when invalid
    return ET.parse(path).getroot()  # noqa: S314 - pytest wrote it, just now


def _case(root: ET.Element, name: str) -> ET.Element:
    (case,) = [c for c in root.iter("testcase") if c.get("name") == name]
    return case


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_failing_test_xml_is_valid_and_carries_the_transcript(
    pytester: pytest.Pytester, family: str
) -> None:
    root = _run(pytester, family)
    case = _case(root, "test_echo_is_wrong")
    assert case.find("properties") is None  # xunit2 forbids them; CI does not show them
    failure = case.find("failure")
    assert failure is not None
    # The crash line is the message; the diagnostics are in the text CI shows.
    assert "assert b'ping, hello' == b'pong'" in (failure.get("message") or "")
    text = failure.text or ""
    assert " multiconn " in text
    assert "seed: " in text
    assert "replay the same chunk boundaries: pytest 'test_failing_test_xml_is_valid" in text
    assert "counters: accepted=1 open=0 closed=1 bytes_in=11 bytes_out=11" in text
    for event in ("connect", "in", "out", "eof-in", "close"):
        assert f"ms {event}" in text, text
    # The traceback is still there, before the section.
    assert text.index("def test_echo_is_wrong") < text.index(" multiconn ")


def test_passing_test_gets_nothing(pytester: pytest.Pytester) -> None:
    root = _run(pytester)
    case = _case(root, "test_fine")
    assert list(case) == []  # no properties, no failure, no output


def test_section_is_printed_once_in_the_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING_ECHO_TEST)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    assert out.count(" multiconn ") == 1, out
    assert out.count("bytes_in=11 bytes_out=11") == 1, out


def test_leak_error_carries_the_section_too(pytester: pytest.Pytester) -> None:
    # A teardown error whose report text is a plain string (the LeakError message).
    pytester.makepyfile(
        """
        from pytest_multiconn import EchoServer

        def test_leaky(multiconn_server):
            EchoServer().start()
        """
    )
    result = pytester.runpytest("--junit-xml=report.xml")
    result.assert_outcomes(passed=1, errors=1)
    # Not validated: pytest writes a teardown error as <error>, which its own junit-10.xsd
    # spells <errors>; that mismatch is pytest's, not ours.
    root = ET.parse(pytester.path / "report.xml").getroot()  # noqa: S314 - pytest wrote it
    assert root.find(".//properties/property[@name='multiconn (teardown)']") is None
    error = _case(root, "test_leaky").find("error")
    assert error is not None
    text = error.text or ""
    assert "LeakError" in text
    assert "still running" in text
    assert " multiconn " in text
    assert "seed: " in text


def test_section_reaches_the_xml_through_xdist(pytester: pytest.Pytester) -> None:
    # Under xdist the controller writes the XML from reports serialised by the workers: the
    # section travels inside the failure's longrepr.
    pytester.makepyfile(FAILING_ECHO_TEST)
    result = pytester.runpytest_subprocess(
        "-n", "2", "-p", "xdist", "-p", "no:cacheprovider", "--junit-xml=report.xml",
        timeout=120,
    )
    result.assert_outcomes(failed=1, passed=1)
    path = pytester.path / "report.xml"
    xmlschema.XMLSchema(XSD).validate(path)
    failure = _case(ET.parse(path).getroot(), "test_echo_is_wrong").find("failure")  # noqa: S314
    assert failure is not None
    text = failure.text or ""
    assert "multiconn-echo[gw" in text
    assert "bytes_in=11 bytes_out=11" in text
