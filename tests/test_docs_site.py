"""The documentation site builds strictly, reads as rendered text, and works opened from disk.

One module-scoped build (``mkdocs build --strict``, about 2 s) serves every test here:

* no page shows a raw reST role (``:class:`` and friends) from a docstring: ``docs/hooks.py``
  turns them into cross-references at build time;
* every link between pages is a relative link to an ``.html`` file that exists on disk (no
  ``folder/`` links, which open a directory listing from ``file://``), and every ``#anchor``
  it names exists on the target page;
* every public namespace has a reference page;
* headless Chromium renders one page of each kind (home, a how-to, the API reference) at
  1280 px wide, and the screenshot is not blank.

The README is a landing page: at most 300 lines, saying where the docs are and how to open
them; the figures it used to carry live in the docs pages.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
#: The command that reproduces the panel's verdict table, which the README and the suite page
#: both show.
PANEL_COMMAND = "python benchmarks/panel.py --seeds 5"

# A reST role left in rendered text: ``:class:`X``` renders as ``:class:<code>X</code>``.
RAW_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|data|attr|exc|obj|const):`")

# Public namespaces (see src/pytest_multiconn/__init__.py and ARCHITECTURE.md) and the page
# rendering each one with a ``::: name`` block.
NAMESPACES = {
    "pytest_multiconn": "reference/api.md",
    "pytest_multiconn.errors": "reference/api.md",
    "pytest_multiconn.client": "reference/client.md",
    "pytest_multiconn.servers": "reference/servers.md",
    "pytest_multiconn.exchanges": "reference/exchanges.md",
    "pytest_multiconn.faults": "reference/faults.md",
    "pytest_multiconn.proxy": "reference/proxy.md",
    "pytest_multiconn.tls": "reference/tls.md",
    "pytest_multiconn.suite": "reference/suite.md",
    "pytest_multiconn.udp": "reference/udp.md",
    "pytest_multiconn.toxiproxy": "reference/toxiproxy.md",
    "pytest_multiconn.strategies": "reference/strategies.md",
    "pytest_multiconn.lowlevel": "reference/lowlevel.md",
    "pytest_multiconn.fixtures": "reference/fixtures.md",
}


class _Page(HTMLParser):
    """The links, ids and visible text of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []  # (tag.attr, value)
        self.ids: set[str] = set()
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        for name in ("href", "src"):
            if values.get(name) and tag in ("a", "link", "script", "img"):
                self.links.append((f"{tag}.{name}", values[name] or ""))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    if not all(importlib.util.find_spec(name) for name in ("mkdocs", "mkdocstrings")):
        pytest.skip("mkdocs is not installed: install the docs extra (make install-docs)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def pages(site: Path) -> dict[Path, _Page]:
    return {path: _parse(path) for path in sorted(site.rglob("*.html"))}


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_become_cross_references_or_code() -> None:
    convert = _hooks().sphinx_roles_to_markdown
    paths = {"pytest_multiconn.EchoServer": "pytest_multiconn.EchoServer"}

    def resolve(role: str, target: str) -> str | None:
        return paths.get(target)

    assert convert(":class:`~pytest_multiconn.EchoServer` runs", resolve) == (
        '<autoref identifier="pytest_multiconn.EchoServer" optional><code>EchoServer</code>'
        "</autoref> runs"
    )
    assert convert("a :class:`pytest_multiconn.EchoServer`", resolve).endswith(
        "><code>pytest_multiconn.EchoServer</code></autoref>"
    )
    assert convert(":meth:`run` and :mod:`trustme`", resolve) == (
        "<code>run()</code> and <code>trustme</code>"
    )
    assert convert(":func:`the suite <check_server>`", resolve) == "<code>the suite</code>"
    assert convert("Usage::\n\n    x = 1\n    y = 2\n\nMore.") == (
        "Usage:\n\n```python\nx = 1\ny = 2\n```\n\nMore."
    )
    assert convert("keep ``::1`` and a :: in the middle") == "keep ``::1`` and a :: in the middle"


def test_the_site_has_a_page_per_nav_entry(pages: dict[Path, _Page], site: Path) -> None:
    names = {path.relative_to(site).as_posix() for path in pages}
    for source in DOCS.rglob("*.md"):
        assert source.relative_to(DOCS).with_suffix(".html").as_posix() in names, source
    assert not [p for p in site.rglob("index.html") if p.parent != site], "directory URLs are back"


def test_no_raw_rest_roles_in_rendered_text(pages: dict[Path, _Page], site: Path) -> None:
    found = {}
    for path, page in pages.items():
        text = html.unescape("".join(page.text))
        # ``:class:<code>X</code>`` loses its tags in the text: look at the raw HTML as well.
        raw = path.read_text(encoding="utf-8")
        hits = RAW_ROLE.findall(text) + re.findall(
            r":(?:class|mod|func|meth|data|attr|exc):<code>", raw
        )
        if hits:
            found[path.relative_to(site).as_posix()] = len(hits)
    assert not found, f"raw reST roles left on pages: {found}"
    api = "".join(pages[site / "reference" / "api.html"].text)
    assert "MultiConnClient" in api
    assert "EchoServer" in api


def test_cross_references_were_rendered(site: Path) -> None:
    # The roles became links: the faults namespace's docstring names Fault, fault_rng...
    raw = (site / "reference" / "faults.html").read_text(encoding="utf-8")
    link = r'<a class="autorefs autorefs-internal"[^>]*href="[^"]*#pytest_multiconn\.'
    assert re.search(link, raw)


def test_every_internal_link_resolves_to_a_file(pages: dict[Path, _Page], site: Path) -> None:
    broken = []
    for path, page in pages.items():
        if path == site / "404.html":  # served by a web server only: its links are absolute
            continue
        for kind, link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            where = f"{path.relative_to(site).as_posix()}: {kind}={link}"
            if not parts.path:  # "#anchor" on the same page
                if parts.fragment and parts.fragment not in page.ids:
                    broken.append(f"{where} (no such anchor)")
                continue
            if parts.path.endswith("/"):
                broken.append(f"{where} (a folder: opens a directory listing from disk)")
                continue
            target = (path.parent / unquote(parts.path)).resolve()
            if not target.is_file():
                broken.append(f"{where} (no such file)")
                continue
            if kind == "a.href" and target.suffix == ".html" and parts.fragment:
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no such anchor)")
    assert not broken, "\n".join(broken[:40])


def test_every_public_namespace_has_a_reference_page() -> None:
    for namespace, page in NAMESPACES.items():
        text = (DOCS / page).read_text(encoding="utf-8")
        assert re.search(rf"^::: {re.escape(namespace)}\s*$", text, re.MULTILINE), (namespace, page)


def test_the_readme_is_a_landing_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert "make docs" in text
    assert "site/index.html" in text
    assert "## Does the suite judge real servers right?" in text or (
        "### Does the suite judge real servers right?" in text
    )
    for source in (text, (DOCS / "howto" / "suite.md").read_text(encoding="utf-8")):
        assert PANEL_COMMAND in source
        assert "| uvicorn-httptools | never_read |" in source or (
            "| uvicorn-httptools | http |" in source)


def test_the_measured_figures_moved_to_the_docs() -> None:
    # The README used to carry these; they came from real runs and live on in the docs.
    expected = {
        "benchmarks.md": ["| ping-pong 100 conns x 1 KiB (rt/s) | 84,994 | 72,957 | 88,495 |",
                          "median **1.47 s** of 5 runs", "| requests/s | 65,041 | 34,477 |",
                          "| warm-up meets the peaks (current) | 1,353 | 78,466 |", "make soak"],
        "howto/proxy.md": ["| stream, 10 connections, 64 KiB in flight | 4,390 MB/s | 1,481 MB/s"],
        "howto/tls.md": ["| handshakes/s, ECDSA (`python benchmarks/tls.py`) | 2,592 | 2,538 |"],
        "howto/xdist.md": ["ratio **0.56**", "python tools/flake_check.py --runs 3 --burn 1"],
        "howto/suite.md": ["python benchmarks/faults.py --reps 3", "within 0.53 s"],
        "howto/coverage.md": ["99%, 95% and 97%; 91% for the package"],
    }
    for page, needles in expected.items():
        text = (DOCS / page).read_text(encoding="utf-8")
        for needle in needles:
            assert needle in text, (page, needle)


# -- screenshots ---------------------------------------------------------------------------------


def _png_size_and_pixels(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed IDAT bytes) of a PNG, without an imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


SCREENSHOTS = {
    "home": "index.html",
    "how-to": "howto/your-client.html",
    "api reference": "reference/api.html",
}


@pytest.mark.parametrize("kind", list(SCREENSHOTS))
def test_pages_render_in_headless_chromium(
    kind: str, site: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not (shutil.which(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} is not installed")
    work = tmp_path_factory.mktemp("chromium")
    png = work / f"{kind.replace(' ', '-')}.png"
    page = site / SCREENSHOTS[kind]
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={work / 'profile'}", "--window-size=1280,900", f"--screenshot={png}",
        f"file://{page}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert png.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    width, height, pixels = _png_size_and_pixels(png.read_bytes())
    assert (width, height) == (1280, 900)
    # A blank page (one colour) compresses to a handful of distinct byte values once filtered;
    # text, code blocks and the navigation give many, and many bytes away from the background.
    distinct = len(set(pixels))
    common = max(pixels.count(value) for value in set(pixels[:: max(1, len(pixels) // 4096)]))
    assert distinct > 64, f"{png}: looks blank ({distinct} distinct byte values)"
    assert common < 0.99 * len(pixels), f"{png}: looks blank (one byte value fills it)"
