"""Reports a CI keeps: a suite run as JSON, as JUnit XML and as one HTML page.

The printed table says what broke; a CI job needs more, and in the forms its tools read:

* **JSON** (:func:`report_to_dict`, :func:`write_json`) keeps everything, for scripts that
  compare runs or plot a server's memory across builds;
* **JUnit XML** (:func:`junit_xml`, :func:`write_junit_xml`) is what CI servers (GitLab,
  Jenkins, GitHub test reporters) turn into a list of tests: one ``<testcase>`` per row, the
  broken contracts as failures with their wire transcript, rows that do not apply as skips.
  It validates against the JUnit schema pytest itself tests its ``--junit-xml`` output with,
  so a tool that accepts pytest's reports accepts these;
* **HTML** (:func:`render_html`, :func:`write_html`) is for a person: one self-contained page
  (no external assets, so it still reads when downloaded from a CI artefact store years
  later) in the manner of Autobahn|Testsuite's reports: a summary table, and per row its
  transcript, measurements and a plot of the server's memory and CPU.

Everything here is a pure function of a :class:`~pytest_multiconn.suite.model.SuiteReport`:
no sockets, no pytest, so a report can be rendered again from a saved run, and in tests
without a server.  Details and transcripts hold arbitrary bytes' reprs, so every string is
escaped for its format, and characters XML 1.0 cannot carry at all are spelled out.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pytest_multiconn.core.address import Address
from pytest_multiconn.suite.model import FAIL, NA, NOTE, PASS, Sample, SuiteReport, SuiteRow

__all__ = [
    "junit_xml",
    "render_html",
    "report_to_dict",
    "write_html",
    "write_json",
    "write_junit_xml",
]

#: Names the JSON layout, so a consumer of saved reports can tell versions apart.
JSON_FORMAT = "pytest-multiconn.suite-report/1"

_MIB = 1024 * 1024


# -- shared helpers --------------------------------------------------------------------------


def _address_text(address: Address) -> str:
    """``host:port`` for a TCP address (``[v6]:port`` for IPv6), the repr for anything else
    (a Unix socket path, an object the caller passed): what a reader would type back."""
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):  # noqa: PLR2004 - (host, port[, flow, scope])
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def _row_name(row: SuiteRow) -> str:
    return row.fault


def _failed(row: SuiteRow) -> bool:
    """A row fails when it did not pass; a FAIL status on a "passed" row is contradictory
    data, and a report that hides a FAIL is worse than one that shows it twice."""
    return not row.passed or row.result == FAIL


def _kind(row: SuiteRow) -> str:
    """The row's verdict in one of the four statuses (FAIL first, see :func:`_failed`)."""
    if _failed(row):
        return FAIL
    result = row.result
    return result if result in (NA, NOTE) else PASS


def _jsonable(value: Any) -> Any:
    """``value`` as JSON types.  Non-finite floats become ``None`` (JSON has no NaN, and a
    file other tools cannot parse is worse than a missing number); bytes and unknown objects
    become their repr, which is how the rest of the suite shows them."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return repr(value)


def _format_value(value: Any) -> str:
    """A measurement for people: floats to six significant digits, the rest as they print."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    return str(value)


def _counts(rows: Iterable[SuiteRow]) -> dict[str, int]:
    counts = Counter(_kind(r) for r in rows)
    return {status: counts.get(status, 0) for status in (PASS, FAIL, NA, NOTE)}


# -- JSON ------------------------------------------------------------------------------------


def _sample_to_dict(sample: Sample) -> dict[str, Any]:
    return {"t": _jsonable(sample.t), "memory": sample.memory, "cpu": _jsonable(sample.cpu)}


def _row_to_dict(row: SuiteRow) -> dict[str, Any]:
    return {
        "name": _row_name(row),
        "result": _kind(row),
        "status": row.status,
        "passed": row.passed,
        "connections": row.connections,
        "bytes": row.bytes,
        "seconds": _jsonable(row.seconds),
        "settle_seconds": _jsonable(getattr(row, "settle_seconds", 0.0)),
        "detail": row.detail,
        "measurements": _jsonable(dict(row.measurements)),
        "transcript": [str(line) for line in row.transcript],
        "samples": [_sample_to_dict(s) for s in row.samples],
        "pids": list(row.pids),
    }


def report_to_dict(report: SuiteReport) -> dict[str, Any]:
    """The whole run as JSON-ready data: every row with its measurements, transcript,
    samples and pids, and the run's target, seed, protocol, replay command, time and verdict.

    ``address`` is the text a reader would type (``host:port``); ``counts`` saves every
    consumer from re-deriving the tally, and ``format`` names this layout."""
    return {
        "format": JSON_FORMAT,
        "address": _address_text(report.address),
        "protocol": report.protocol,
        "seed": report.seed,
        "command": report.command,
        "seconds": _jsonable(report.seconds),
        "ok": report.ok,
        "pid": report.pid,
        "pids": list(report.pids),
        "counts": _counts(report.rows),
        "rows": [_row_to_dict(r) for r in report.rows],
    }


def write_json(report: SuiteReport, path: str | os.PathLike[str]) -> Path:
    """Write :func:`report_to_dict` to ``path`` (UTF-8, indented for diffs); returns it."""
    target = Path(path)
    text = json.dumps(report_to_dict(report), indent=2, ensure_ascii=False, allow_nan=False)
    target.write_text(text + "\n", encoding="utf-8")
    return target


# -- JUnit XML -------------------------------------------------------------------------------

# Characters XML 1.0 cannot carry, even as character references: C0 controls other than tab,
# newline and carriage return, lone surrogates, U+FFFE and U+FFFF.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` with the characters XML cannot hold written as ``\\xNN``/``\\uNNNN``, the
    way Python's repr would, so the file stays well-formed and nothing is silently lost."""
    def spell(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"  # noqa: PLR2004 - byte range

    return _XML_ILLEGAL.sub(spell, text)


def _seconds(value: float) -> str:
    """Seconds as pytest writes them (``%.3f``): the schema's SUREFIRE_TIME accepts no more
    than three decimals, nor exponents, nor NaN."""
    return f"{value:.3f}" if math.isfinite(value) and value >= 0 else "0.000"


def _classname(report: SuiteReport) -> str:
    protocol = re.sub(r"\W+", "_", str(report.protocol)).strip("_") or "unknown"
    return f"multiconn.suite.{protocol}"


def _measurement_lines(row: SuiteRow) -> list[str]:
    return [f"  {name} = {_format_value(value)}" for name, value in row.measurements.items()]


def _system_out(row: SuiteRow) -> str:
    """What CI shows under a test's "output": the detail, the wire transcript and the numbers
    behind the verdict, for every row, so a pass that was close is visible too."""
    lines = [f"{_row_name(row)}: {_kind(row)} in {row.seconds:.3f}s, {row.connections} "
             f"connection(s), {row.bytes} bytes"]
    if row.detail:
        lines.append(f"detail: {row.detail}")
    lines.append("transcript:" if row.transcript else "transcript: (none recorded)")
    lines.extend(f"  {line}" for line in row.transcript)
    if row.measurements:
        lines.append("measurements:")
        lines.extend(_measurement_lines(row))
    if row.samples:
        lines.append(f"samples: {len(row.samples)} (memory and CPU of pids "
                     f"{', '.join(map(str, row.pids)) or 'unknown'})")
    return _xml_text("\n".join(lines) + "\n")


def _testcase(report: SuiteReport, row: SuiteRow) -> ET.Element:
    case = ET.Element("testcase", {
        "classname": _classname(report),
        "name": _xml_text(_row_name(row)),
        "time": _seconds(row.seconds),
    })
    kind = _kind(row)
    if kind == FAIL:
        failure = ET.SubElement(case, "failure", {
            "type": "ContractBreak",
            "message": _xml_text(row.detail or "contract broken"),
        })
        body = [row.detail or "contract broken", ""]
        body.append("transcript:" if row.transcript else "transcript: (none recorded)")
        body.extend(f"  {line}" for line in row.transcript)
        failure.text = _xml_text("\n".join(body) + "\n")
    elif kind == NA:
        skipped = ET.SubElement(case, "skipped", {
            "type": "pytest.skip",
            "message": _xml_text(row.detail or "does not apply"),
        })
        skipped.text = _xml_text(row.detail)
    ET.SubElement(case, "system-out").text = _system_out(row)
    return case


def _junit_tree(report: SuiteReport) -> ET.Element:
    counts = _counts(report.rows)
    total = report.seconds or sum(r.seconds for r in report.rows)
    suites = ET.Element("testsuites", {"name": "pytest-multiconn suite"})
    suite = ET.SubElement(suites, "testsuite", {
        "name": _classname(report),
        "tests": str(len(report.rows)),
        "failures": str(counts[FAIL]),
        "errors": "0",
        "skipped": str(counts[NA]),
        "time": _seconds(total),
    })
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("address", _address_text(report.address)),
        ("protocol", str(report.protocol)),
        ("seed", str(report.seed)),
        ("command", report.command or ""),
        ("pids", " ".join(map(str, report.pids))),
        ("ok", str(report.ok).lower()),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": _xml_text(value)})
    for row in report.rows:
        suite.append(_testcase(report, row))
    header = [f"fault-injection suite ({report.protocol}) against "
              f"{_address_text(report.address)}, seed {report.seed}"]
    if report.command:
        header.append(f"replay: {report.command}")
    header.append(report.table())
    ET.SubElement(suite, "system-out").text = _xml_text("\n".join(header) + "\n")
    return suites


def junit_xml(report: SuiteReport) -> str:
    """The run as a JUnit XML document (text, with its XML declaration).

    One ``<testsuite>`` named ``multiconn.suite.<protocol>`` whose ``<properties>`` name the
    target, seed and replay command; per row a ``<testcase>`` whose ``<failure>`` (broken
    contract) carries the detail and the transcript, whose ``<skipped>`` says why a check
    does not apply, and whose ``<system-out>`` always has transcript and measurements (a
    note passes, with its observation there).  Properties sit on the suite only: xunit2
    allows none inside a testcase."""
    tree = _junit_tree(report)
    ET.indent(tree)
    body = ET.tostring(tree, encoding="unicode")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n"


def write_junit_xml(report: SuiteReport, path: str | os.PathLike[str]) -> Path:
    """Write :func:`junit_xml` to ``path`` (UTF-8); returns it."""
    target = Path(path)
    target.write_text(junit_xml(report), encoding="utf-8")
    return target


# -- HTML ------------------------------------------------------------------------------------

_HTML_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _h(value: Any) -> str:
    """Escaped for HTML text and attributes; control characters spelled out (a browser
    would show a NUL as a replacement box, or nothing at all)."""
    text = _HTML_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}"
                             if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",  # noqa: PLR2004 - byte range
                             str(value))
    return html.escape(text, quote=True)


def _anchor(index: int, row: SuiteRow) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", _row_name(row)).strip("-") or "row"
    return f"row-{index}-{slug}"


_CSS = """
:root { --pass:#1a7f37; --fail:#cf222e; --na:#6e7781; --note:#9a6700; --line:#d0d7de;
        --muted:#57606a; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:#1f2328;
       margin: 0; background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
.verdict { display:inline-block; padding:2px 10px; border-radius:12px; color:#fff;
           font-weight:600; font-size:13px; vertical-align: middle; }
.verdict.ok { background: var(--pass); } .verdict.broken { background: var(--fail); }
dl.meta { display:grid; grid-template-columns: 170px 1fr; gap:4px 16px; margin:14px 0 0;
          padding: 12px 16px; background: var(--bg); border:1px solid var(--line);
          border-radius: 6px; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin:0; overflow-wrap:anywhere; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
                   font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left;
         vertical-align: top; }
th { background: var(--bg); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.detail { overflow-wrap: anywhere; }
.res { display:inline-block; min-width:44px; text-align:center; padding:1px 6px;
       border-radius:4px; color:#fff; font-weight:600; font-size:12px; }
.res.pass { background: var(--pass); } .res.FAIL { background: var(--fail); }
.res.na { background: var(--na); } .res.note { background: var(--note); }
tr.FAIL td { background: #ffebe9; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
details.row { border:1px solid var(--line); border-radius:6px; margin: 8px 0; }
details.row > summary { cursor:pointer; padding: 8px 12px; background: var(--bg);
                        border-radius: 6px; overflow-wrap:anywhere; }
details.row[open] > summary { border-bottom: 1px solid var(--line);
                              border-radius: 6px 6px 0 0; }
details.row > .body { padding: 4px 14px 12px; }
pre { background: #0d1117; color: #e6edf3; padding: 10px 12px; border-radius: 6px;
      max-height: 420px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere;
      margin: 0; }
.muted { color: var(--muted); }
table.measure { width: auto; min-width: 420px; }
table.measure td:first-child { font-family: ui-monospace, Menlo, Consolas, monospace; }
svg.plot { display:block; width: 100%; max-width: 760px; height: auto;
           border:1px solid var(--line); border-radius: 6px; background: #fff; }
.counts span { margin-right: 12px; }
"""

# Opens a row's <details> when a link in the summary table (or the page's address) points at
# it; the page reads the same without it, the rows are just closed.
_SCRIPT = """
function openTarget() {
  var id = decodeURIComponent(location.hash.slice(1));
  var el = id && document.getElementById(id);
  if (el && el.tagName === "DETAILS") { el.open = true; }
}
window.addEventListener("hashchange", openTarget); openTarget();
"""


def _res_class(kind: str) -> str:
    return {PASS: "pass", FAIL: "FAIL", NA: "na", NOTE: "note"}.get(kind, "na")


def _badge(kind: str) -> str:
    return f'<span class="res {_res_class(kind)}">{_h(kind)}</span>'


def _fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.01 else f"{seconds * 1e3:.0f} ms"  # noqa: PLR2004
    return f"{seconds:.2f} s"


def render_html(report: SuiteReport) -> str:
    """The run as one self-contained HTML page (inline CSS, inline SVG, a four-line script
    that only opens the row a link points at).

    The header names the target, protocol, seed, the server processes measured, the total
    time and the command that replays the run; a summary table lists every row with its
    result coloured; each row then opens (``<details>``; broken contracts start open) to its
    wire transcript, its measurements and a plot of the server tree's memory and CPU."""
    counts = _counts(report.rows)
    total = report.seconds or sum(r.seconds for r in report.rows)
    verdict = ('<span class="verdict ok">all contracts kept</span>' if report.ok else
               f'<span class="verdict broken">{counts[FAIL]} contract(s) broken</span>'
               if report.rows else '<span class="verdict broken">no rows</span>')
    title = f"multiconn suite: {report.protocol} at {_address_text(report.address)}"
    pids = ", ".join(map(str, report.pids)) or (
        f"{report.pid} (listener owner; tree not measured)" if report.pid is not None
        else "not measured")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Fault-injection suite: {_h(report.protocol)} {verdict}</h1>",
        '<p class="counts muted">'
        + "".join(f"<span>{_badge(k)} {counts[k]}</span>" for k in (PASS, FAIL, NA, NOTE))
        + "</p>",
        '<dl class="meta">',
        f'<dt>target</dt><dd class="mono">{_h(_address_text(report.address))}</dd>',
        f"<dt>protocol</dt><dd>{_h(report.protocol)}</dd>",
        f'<dt>seed</dt><dd class="mono">{_h(report.seed)}</dd>',
        f"<dt>pids measured</dt><dd>{_h(pids)}</dd>",
        f"<dt>total time</dt><dd>{_h(_fmt_seconds(total))} ({len(report.rows)} rows)</dd>",
        "<dt>replay</dt><dd>"
        + (f"<code>{_h(report.command)}</code>" if report.command else
           f'<span class="muted">no command recorded; rerun with seed {_h(report.seed)}</span>')
        + "</dd>",
        "</dl>",
        "<h2>Summary</h2>",
        _summary_table(report.rows),
        "<h2>Rows</h2>",
    ]
    parts.extend(_row_section(i, row) for i, row in enumerate(report.rows, 1))
    parts.append('<p class="muted">Generated by pytest-multiconn from a SuiteReport.</p>')
    parts.append(f"</main><script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _summary_table(rows: Sequence[SuiteRow]) -> str:
    if not rows:
        return '<p class="muted">The run has no rows.</p>'
    head = ("<table><thead><tr><th>#</th><th>check</th><th>result</th><th>time</th>"
            "<th>connections</th><th>bytes</th><th>detail</th></tr></thead><tbody>")
    body = []
    for i, row in enumerate(rows, 1):
        kind = _kind(row)
        body.append(
            f'<tr class="{_res_class(kind)}"><td class="num">{i}</td>'
            f'<td><a href="#{_anchor(i, row)}">{_h(_row_name(row))}</a></td>'
            f"<td>{_badge(kind)}</td>"
            f'<td class="num">{_h(_fmt_seconds(row.seconds))}</td>'
            f'<td class="num">{row.connections}</td>'
            f'<td class="num">{row.bytes:,}</td>'
            f'<td class="detail">{_h(row.detail)}</td></tr>'
        )
    return head + "".join(body) + "</tbody></table>"


def _row_section(index: int, row: SuiteRow) -> str:
    kind = _kind(row)
    is_open = " open" if kind == FAIL else ""
    settle = float(getattr(row, "settle_seconds", 0.0) or 0.0)
    facts = [f"{row.connections} connection(s)", f"{row.bytes:,} bytes",
             _fmt_seconds(row.seconds)]
    if settle:
        facts.append(f"{_fmt_seconds(settle)} settling before it")
    if row.pids:
        facts.append("pids " + ", ".join(map(str, row.pids)))
    transcript = (f"<pre>{_h(chr(10).join(row.transcript))}</pre>" if row.transcript else
                  '<p class="muted">No transcript recorded for this row.</p>')
    return "\n".join([
        f'<details class="row" id="{_anchor(index, row)}"{is_open}>',
        f"<summary>{_badge(kind)} <strong>{_h(_row_name(row))}</strong> "
        f'<span class="muted">{_h(row.detail)}</span></summary>',
        '<div class="body">',
        f'<p class="muted">{_h(" · ".join(facts))}</p>',
        "<h3>Wire transcript</h3>",
        transcript,
        "<h3>Measurements</h3>",
        _measurements_table(row),
        "<h3>Server memory and CPU</h3>",
        _plot(row),
        "</div></details>",
    ])


def _measurements_table(row: SuiteRow) -> str:
    if not row.measurements:
        return '<p class="muted">No measurements recorded for this row.</p>'
    cells = "".join(
        f'<tr><td>{_h(name)}</td><td class="num">{_h(_format_value(value))}</td></tr>'
        for name, value in row.measurements.items()
    )
    return ('<table class="measure"><thead><tr><th>measurement</th><th>value</th></tr>'
            f"</thead><tbody>{cells}</tbody></table>")


# Plot geometry (SVG user units): the plot area inside the axes' labels.
_W, _H = 760, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 690, 26, 176
_MEM_COLOUR, _CPU_COLOUR = "#0969da", "#bc4c00"


def _segments(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive measured points: a ``None`` (not measured then) breaks the line,
    rather than being drawn as zero or bridged as if it were known."""
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for t, v in points:
        if v is None or not math.isfinite(v) or not math.isfinite(t):
            if current:
                runs.append(current)
            current = []
        else:
            current.append((t, v))
    if current:
        runs.append(current)
    return runs


def _series_svg(runs: list[list[tuple[float, float]]], *, xs: tuple[float, float],
                ys: tuple[float, float], colour: str) -> str:
    (x0, x1), (y0, y1) = xs, ys

    def x(t: float) -> float:
        return _LEFT + (t - x0) / (x1 - x0) * (_RIGHT - _LEFT)

    def y(v: float) -> float:
        return _BOTTOM - (v - y0) / (y1 - y0) * (_BOTTOM - _TOP)

    out = []
    for run in runs:
        if len(run) == 1:
            t, v = run[0]
            out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
        else:
            pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" '
                       f'stroke-linejoin="round" points="{pts}"/>')
    return "".join(out)


def _memory_range(values: list[float]) -> tuple[float, float]:
    """From a little under the lowest reading to a little over the highest: a server's
    baseline is tens of MiB and what matters is how it moves, so the axis does not start at
    zero; it is labelled, so the scale is never hidden.  At least 1 MiB tall."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 1.0)
    lo = max(0.0, lo - span * 0.1)
    return lo, lo + span * 1.2


def _plot(row: SuiteRow) -> str:
    """An inline SVG of the server tree's memory (MiB, left axis) and CPU (% of one CPU,
    right axis) over the row; "not measured" in words where the samples say nothing."""
    samples = list(row.samples)
    memory = [(float(s.t), None if s.memory is None else s.memory / _MIB) for s in samples]
    cpu = [(float(s.t), None if s.cpu is None else float(s.cpu) * 100) for s in samples]
    mem_runs, cpu_runs = _segments(memory), _segments(cpu)
    if not mem_runs and not cpu_runs:
        why = "no samples were taken" if not samples else "every sample was empty"
        return (f'<p class="muted">Memory and CPU: not measured for this row ({why}; the '
                "server's processes may not be visible from here).</p>")
    times = [t for t, _ in memory if math.isfinite(t)]
    x0 = 0.0
    x1 = max([*times, row.seconds if math.isfinite(row.seconds) else 0.0, 1e-3])
    grid = []
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        yy = _BOTTOM - frac * (_BOTTOM - _TOP)
        grid.append(f'<line x1="{_LEFT}" y1="{yy:.1f}" x2="{_RIGHT}" y2="{yy:.1f}" '
                    f'stroke="#eaeef2" stroke-width="1"/>')
    axes = [
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_BOTTOM}" stroke="#8c959f"/>',
        f'<line x1="{_RIGHT}" y1="{_TOP}" x2="{_RIGHT}" y2="{_BOTTOM}" stroke="#8c959f"/>',
        f'<line x1="{_LEFT}" y1="{_BOTTOM}" x2="{_RIGHT}" y2="{_BOTTOM}" stroke="#8c959f"/>',
    ]
    labels = [
        f'<text x="{_LEFT}" y="{_BOTTOM + 16}" text-anchor="middle">0 s</text>',
        f'<text x="{(_LEFT + _RIGHT) / 2:.0f}" y="{_BOTTOM + 16}" text-anchor="middle">'
        f"{x1 / 2:.3g} s</text>",
        f'<text x="{_RIGHT}" y="{_BOTTOM + 16}" text-anchor="middle">{x1:.3g} s</text>',
    ]
    lines = []
    legend = []
    if mem_runs:
        lo, hi = _memory_range([v for run in mem_runs for _, v in run])
        lines.append(_series_svg(mem_runs, xs=(x0, x1), ys=(lo, hi), colour=_MEM_COLOUR))
        for frac in (0.0, 0.5, 1.0):
            yy = _BOTTOM - frac * (_BOTTOM - _TOP)
            labels.append(f'<text x="{_LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" '
                          f'fill="{_MEM_COLOUR}">{lo + frac * (hi - lo):.1f}</text>')
        legend.append(f'<tspan fill="{_MEM_COLOUR}">\u2014 memory, MiB (left)</tspan>')
    else:
        legend.append('<tspan fill="#57606a">memory: not measured</tspan>')
    if cpu_runs:
        top = max([100.0, *(v for run in cpu_runs for _, v in run)])
        lines.append(_series_svg(cpu_runs, xs=(x0, x1), ys=(0.0, top), colour=_CPU_COLOUR))
        for frac in (0.0, 0.5, 1.0):
            yy = _BOTTOM - frac * (_BOTTOM - _TOP)
            labels.append(f'<text x="{_RIGHT + 6}" y="{yy + 4:.1f}" '
                          f'fill="{_CPU_COLOUR}">{frac * top:.0f}%</text>')
        legend.append(f'<tspan fill="{_CPU_COLOUR}" dx="18">\u2014 CPU, % of one CPU '
                      "(right)</tspan>")
    else:
        legend.append('<tspan fill="#57606a" dx="18">CPU: not measured</tspan>')
    summary = _plot_summary(memory, cpu)
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
        f'role="img" font-family="system-ui, sans-serif" font-size="11">'
        f"<title>{_h(summary)}</title>"
        f'<text x="{_LEFT}" y="16" font-size="12">{"".join(legend)}</text>'
        + "".join(grid) + "".join(axes) + "".join(lines) + "".join(labels)
        + "</svg>"
        + f'<p class="muted">{_h(summary)}</p>'
    )


def _plot_summary(memory: list[tuple[float, float | None]],
                  cpu: list[tuple[float, float | None]]) -> str:
    """The plot in words (its title, and a line under it): the numbers a reader checks."""
    parts = [f"{len(memory)} sample(s)"]
    mem = [v for _, v in memory if v is not None]
    if mem:
        parts.append(f"memory {mem[0]:.1f} \u2192 {mem[-1]:.1f} MiB (peak {max(mem):.1f})")
    else:
        parts.append("memory not measured")
    use = [v for _, v in cpu if v is not None]
    if use:
        parts.append(f"CPU peak {max(use):.0f}% of one CPU")
    else:
        parts.append("CPU not measured")
    return ", ".join(parts)


def write_html(report: SuiteReport, path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8); returns it."""
    target = Path(path)
    target.write_text(render_html(report), encoding="utf-8")
    return target
