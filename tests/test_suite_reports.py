"""The suite's reports a CI keeps (issue 21): JSON, JUnit XML, one HTML page.

Reports are built by hand with every kind of row (pass, FAIL with a transcript, n/a, note;
with samples and without, with gaps in them) and from a real run against an EchoServer.
The JUnit XML is validated against the schema pytest tests its own output with (vendored in
tests/data/junit-10.xsd); the HTML page is parsed, and rendered by headless Chromium.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import xmlschema

from pytest_multiconn.suite.model import FAIL, NA, NOTE, PASS, Sample, SuiteReport, SuiteRow
from pytest_multiconn.suite.reports import (
    JSON_FORMAT,
    junit_xml,
    render_html,
    report_to_dict,
    write_html,
    write_json,
    write_junit_xml,
)

XSD = Path(__file__).parent / "data" / "junit-10.xsd"
MIB = 1024 * 1024
CHROMIUM = "/usr/bin/chromium"

HOSTILE = "<script>alert('x')</script> & \"quoted\" \x00\x1b[31m b'\\xff\\x00'"


def _samples(n: int, base_mib: float, gap_at: int | None = None) -> tuple[Sample, ...]:
    out = []
    for i in range(n):
        memory = None if i == gap_at else int((base_mib + i * 0.4) * MIB)
        out.append(Sample(t=i * 0.05, memory=memory, cpu=min(1.4, i * 0.12)))
    return tuple(out)


def hand_report() -> SuiteReport:
    rows = [
        SuiteRow("exchange", 8, 1536, True, 0.0086,
                 "8 connections, 3 requests each, every reply right (64 B avg)", PASS,
                 measurements={"reply_bytes_avg": 64.0, "requests": 24},
                 transcript=("conn-1 > 21 B b'ping 1\\n'", "conn-1 < 21 B b'ping 1\\n'"),
                 samples=_samples(12, 31.5), pids=(4242, 4243), settle_seconds=0.12),
        SuiteRow("slowloris", 64, 640, False, 2.51,
                 f"server answered after 2.5s, limit 1s; {HOSTILE}", FAIL,
                 measurements={"reply_after_s": 2.5, "limit_s": 1.0, "rss_growth": 5 * MIB,
                               "nan_value": float("nan"), "nested": {"a": [1, 2]}},
                 transcript=("conn-7 > 1 B b'p'", "conn-7 ... 1.000s pause",
                             f"conn-7 < 3 B {HOSTILE}"),
                 samples=_samples(20, 40.0, gap_at=7), pids=(4242,)),
        SuiteRow("half-close", 1, 0, True, 0.001,
                 "does not apply: the server closes after each reply", NA),
        SuiteRow("burst", 132, 256, True, 0.0235,
                 "all 128 served, 3 only after a SYN retry: the listen backlog is short", NOTE,
                 samples=(Sample(0.0, None, None), Sample(0.1, None, None))),
        SuiteRow("idle", 2, 0, True, 0.3, "kept open 0.3s", PASS,
                 samples=(Sample(0.0, None, 0.02), Sample(0.1, None, 0.05))),
    ]
    return SuiteReport(("127.0.0.1", 40123), seed=2553898067, rows=rows, pid=4242,
                       protocol="echo", pids=(4242, 4243),
                       command="multiconn suite 127.0.0.1:40123 --seed 2553898067",
                       seconds=2.9)


def real_report() -> SuiteReport:
    from pytest_multiconn import EchoServer
    from pytest_multiconn.suite.checks import run_checks

    with EchoServer() as server:
        return run_checks(server.address, seed=1, only=["exchange", "burst"])


@pytest.fixture(scope="module")
def real() -> SuiteReport:
    report = real_report()
    assert [r.fault for r in report.rows] == ["exchange", "burst"], report.table()
    return report


# -- JSON --------------------------------------------------------------------------------------


def test_json_round_trips_with_every_field(tmp_path: Path) -> None:
    report = hand_report()
    path = write_json(report, tmp_path / "suite.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == report_to_dict(report)  # nothing lost or changed on the way
    assert data["format"] == JSON_FORMAT
    assert data["address"] == "127.0.0.1:40123"
    assert (data["seed"], data["protocol"], data["ok"]) == (2553898067, "echo", False)
    assert data["command"] == "multiconn suite 127.0.0.1:40123 --seed 2553898067"
    assert (data["seconds"], data["pid"], data["pids"]) == (2.9, 4242, [4242, 4243])
    assert data["counts"] == {PASS: 2, FAIL: 1, NA: 1, NOTE: 1}
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["exchange", "slowloris", "half-close", "burst", "idle"]
    assert [r["result"] for r in data["rows"]] == [PASS, FAIL, NA, NOTE, PASS]
    ex = rows["exchange"]
    assert ex["measurements"] == {"reply_bytes_avg": 64.0, "requests": 24}
    assert ex["transcript"] == ["conn-1 > 21 B b'ping 1\\n'", "conn-1 < 21 B b'ping 1\\n'"]
    assert ex["samples"][1] == {"t": 0.05, "memory": int(31.9 * MIB), "cpu": 0.12}
    assert (ex["pids"], ex["settle_seconds"], ex["connections"], ex["bytes"]) == \
        ([4242, 4243], 0.12, 8, 1536)
    slow = rows["slowloris"]
    assert slow["passed"] is False
    assert slow["detail"].endswith(HOSTILE)  # kept verbatim: JSON escapes it
    assert slow["measurements"]["nan_value"] is None  # JSON has no NaN
    assert slow["measurements"]["nested"] == {"a": [1, 2]}
    assert slow["samples"][7]["memory"] is None
    assert rows["burst"]["samples"] == [{"t": 0.0, "memory": None, "cpu": None},
                                        {"t": 0.1, "memory": None, "cpu": None}]


def test_json_of_a_real_run(real: SuiteReport, tmp_path: Path) -> None:
    data = json.loads(write_json(real, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["ok"] is True
    assert data["seed"] == 1
    host, port = real.address[:2]
    assert data["address"] == f"{host}:{port}"
    assert [r["name"] for r in data["rows"]] == ["exchange", "burst"]
    for row, src in zip(data["rows"], real.rows, strict=True):
        assert row["connections"] == src.connections
        assert row["detail"] == src.detail
        assert row["result"] in (PASS, NOTE)


# -- JUnit XML -----------------------------------------------------------------------------------


def _validated(path: Path) -> ET.Element:
    xmlschema.XMLSchema(XSD).validate(path)  # raises, naming what is wrong
    return ET.parse(path).getroot()  # noqa: S314 - we wrote it, just now


def test_junit_xml_validates_and_maps_every_row(tmp_path: Path) -> None:
    report = hand_report()
    root = _validated(write_junit_xml(report, tmp_path / "junit.xml"))
    (suite,) = root.iter("testsuite")
    assert suite.attrib | {"time": ""} == {"name": "multiconn.suite.echo", "tests": "5",
                                           "failures": "1", "errors": "0", "skipped": "1",
                                           "time": ""}
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["seed"] == "2553898067"
    assert props["command"] == report.command
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["exchange", "slowloris", "half-close", "burst", "idle"]
    assert {c.get("classname") for c in cases.values()} == {"multiconn.suite.echo"}
    assert cases["slowloris"].get("time") == "2.510"
    assert [child.tag for child in cases["exchange"]] == ["system-out"]
    # The broken contract: message = the detail, text = detail and transcript.
    failure = cases["slowloris"].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("server answered after 2.5s, limit 1s; <script>")
    assert "\\x00\\x1b[31m" in failure.get("message", "")  # XML cannot hold them: spelled out
    assert "conn-7 ... 1.000s pause" in (failure.text or "")
    skipped = cases["half-close"].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "does not apply: the server closes after each reply"
    # A note passes, its observation in system-out.
    assert [child.tag for child in cases["burst"]] == ["system-out"]
    assert "3 only after a SYN retry" in (cases["burst"].findtext("system-out") or "")
    # Every row's transcript and measurements in its output.
    out = cases["exchange"].findtext("system-out") or ""
    assert "conn-1 < 21 B b'ping 1\\n'" in out
    assert "reply_bytes_avg = 64" in out
    assert "rss_growth = 5242880" in (cases["slowloris"].findtext("system-out") or "")


def test_junit_xml_of_a_real_run(real: SuiteReport, tmp_path: Path) -> None:
    root = _validated(write_junit_xml(real, tmp_path / "junit.xml"))
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == ["exchange", "burst"]
    assert root.find(".//failure") is None


def test_junit_xml_of_an_empty_run_is_valid(tmp_path: Path) -> None:
    root = _validated(write_junit_xml(SuiteReport("/run/app.sock", 7), tmp_path / "e.xml"))
    assert [s.get("tests") for s in root.iter("testsuite")] == ["0"]


def test_junit_xml_is_a_string_too() -> None:
    text = junit_xml(hand_report())
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    assert "<script>" not in text


# -- HTML ------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects what the assertions need, and fails on unbalanced structure we rely on."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.details: list[dict[str, str | None]] = []
        self.svgs = 0
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("meta", "link", "br", "img", "line", "circle", "polyline", "input"):
            if tag == "link":
                self.links.append(dict(attrs).get("href") or "")
            return
        self.stack.append(tag)
        if tag == "details":
            self.details.append(dict(attrs))
        elif tag == "svg":
            self.svgs += 1
        elif tag == "script":
            self._in_script = True
            self.scripts.append(dict(attrs).get("src") or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # self-closed SVG shapes

    def handle_endtag(self, tag: str) -> None:
        if tag in ("line", "circle", "polyline"):
            return
        assert self.stack[-1:] == [tag], (tag, self.stack[-5:])
        self.stack.pop()
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


def _parse(html_text: str) -> _Page:
    page = _Page()
    page.feed(html_text)
    page.close()
    assert page.stack == [], page.stack
    return page


def test_html_has_every_row_escaped_and_plotted(tmp_path: Path) -> None:
    report = hand_report()
    text = write_html(report, tmp_path / "suite.html").read_text(encoding="utf-8")
    page = _parse(text)
    body = "".join(page.text)
    for row in report.rows:
        assert row.fault in body
        assert row.detail.split(";")[0] in body
    assert [d.get("id") for d in page.details] == [
        "row-1-exchange", "row-2-slowloris", "row-3-half-close", "row-4-burst", "row-5-idle"]
    assert "open" in page.details[1]  # the broken contract starts open
    assert "open" not in page.details[0]
    # Escaped: the hostile detail is text, never markup.
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<script>alert('x')</script>" in body
    assert "\x00" not in text
    assert "\x1b" not in text
    assert page.scripts == [""]  # one inline script, nothing fetched
    assert page.links == []
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    # Header: target, protocol, seed, pids, time, replay command.
    for needle in ("127.0.0.1:40123", "2553898067", "4242, 4243", "2.90 s",
                   "multiconn suite 127.0.0.1:40123 --seed 2553898067"):
        assert needle in body, needle
    # Plots: rows with memory or CPU samples get one; the others say "not measured".
    sections = text.split('<details class="row"')[1:]
    assert [("<svg" in s) for s in sections] == [True, True, False, False, True]
    assert "not measured" in sections[2]
    assert "not measured" in sections[3]
    assert "memory: not measured" in sections[4]  # CPU only
    assert page.svgs == 3
    assert "reply_after_s" in sections[1]
    assert "nan" in sections[1]


def test_html_of_a_real_run(real: SuiteReport, tmp_path: Path) -> None:
    page = _parse(render_html(real))
    body = "".join(page.text)
    assert "all contracts kept" in body
    assert len(page.details) == 2
    for row in real.rows:
        assert row.fault in body


def test_html_of_an_empty_run() -> None:
    body = "".join(_parse(render_html(SuiteReport(("::1", 80, 0, 0), 3))).text)
    assert "[::1]:80" in body
    assert "The run has no rows." in body


# -- the page in a real browser ----------------------------------------------------------------


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the inflated (still filtered) scanlines of a PNG file."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
                    reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    html_path = write_html(hand_report(), tmp_path / "suite.html")
    png = tmp_path / "suite.png"
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,900",
           f"--screenshot={png}", html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert png.exists(), f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    data = png.read_bytes()
    width, height, raw = _png_pixels(data)
    assert (width, height) == (1280, 900)
    assert len(data) > 20_000, len(data)  # a flat page compresses to a few hundred bytes
    assert len(set(raw)) > 64, len(set(raw))
