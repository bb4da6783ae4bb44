"""pytest imports the plugin at every start, so it imports only what registering its options,
markers and fixtures needs; everything else is imported on first use (issue 25).

A structural check, not a timed one: ``python -X importtime`` in a subprocess lists every
module the plugin (and each of its sub-plugins) imported, and the heavy ones must not be
among them.  ``benchmarks/startup.py`` measures what that saves.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Modules the plugin must not import at start-up: the faults, servers, proxy, client, UDP,
#: toxiproxy and TLS layers of the package (TLS pulls in trustme and cryptography), those
#: third-party packages themselves, and the standard library's ``ssl`` and ``asyncio``.
HEAVY = (
    "trustme",
    "cryptography",
    "ssl",
    "asyncio",
    "h11",
    "pytest_multiconn.tls",
    "pytest_multiconn.faults",
    "pytest_multiconn.proxy",
    "pytest_multiconn.servers",
    "pytest_multiconn.client",
    "pytest_multiconn.udp",
    "pytest_multiconn.toxiproxy",
    "pytest_multiconn.suite",
    "pytest_multiconn.exchanges",
    "pytest_multiconn.core.server",
    "pytest_multiconn.core.loop",
)

#: Modules of the plugin itself that a pytest start does not need: the report section's text
#: (written for a failing test only) and the server fixtures' factory (their first run).
#: Under ``PYTHONDONTWRITEBYTECODE=1`` pytest parses and rewrites every byte of plugin source
#: imported at start, so these wait for first use.
DEFERRED = ("pytest_multiconn.plugin.section", "pytest_multiconn.plugin.factory")

# __import__, not importlib.import_module: -X importtime reports only the C import path.
_IMPORT_ALL = (
    "import pytest_multiconn.plugin as p\n"
    "for name in p.SUB_PLUGINS:\n"
    "    __import__(name)\n"
)


def _imported(code: str) -> list[str]:
    """The modules ``code`` imports, in order, from ``python -X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.append(line.rsplit("|", 1)[1].strip())
    assert names, done.stderr[-2000:]
    return names


def _heavy(names: list[str]) -> list[str]:
    return [n for n in names if any(n == h or n.startswith(h + ".") for h in (*HEAVY, *DEFERRED))]


def test_plugin_imports_nothing_heavy() -> None:
    names = _imported("import pytest_multiconn.plugin")
    assert "pytest_multiconn.plugin" in names
    assert _heavy(names) == []


def test_sub_plugins_import_nothing_heavy() -> None:
    # The plugin registers them (``SUB_PLUGINS``) when pytest registers it, at start-up too.
    names = _imported(_IMPORT_ALL)
    assert "pytest_multiconn.plugin.report" in names
    assert _heavy(names) == []


def test_package_top_level_imports_nothing_heavy() -> None:
    # Every ``import pytest_multiconn.x`` runs the package's __init__ first: its everyday
    # names (EchoServer, MultiConnClient...) are imported on first use.
    assert _heavy(_imported("import pytest_multiconn")) == []


def test_the_check_sees_a_heavy_import() -> None:
    # The check itself: the top-level names it defers are really imported when used.
    names = _imported("import pytest_multiconn; pytest_multiconn.EchoServer")
    assert "pytest_multiconn.servers.echo" in _heavy(names)


def test_the_plugin_loads_the_fault_catalogue_only_for_tests_that_use_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_plain(multiconn_timeout):
            assert "pytest_multiconn.faults.client" not in sys.modules
        """,
        test_fault="""
        def test_fault(multiconn_fault):
            assert multiconn_fault.name
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "test_plain.py")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "--co", "test_fault.py")
    result.stdout.fnmatch_lines(["*test_fault?partial_send?*", "*test_fault?connect_close?*"])


def test_a_plaintext_server_needs_no_tls_nor_asyncio() -> None:
    # The first multiconn_server of a run imports the servers (the fixture's cost, spread
    # over the run); a plaintext one needs neither TLS (trustme and cryptography: about
    # 40 ms) nor ssl nor asyncio (10-15 ms), so they wait for a server that does.
    names = _imported(
        "import pytest_multiconn.plugin\n"
        "from pytest_multiconn.servers.echo import EchoServer\n"
        "with EchoServer() as server:\n"
        "    server.stats()\n"
    )
    assert "pytest_multiconn.servers.echo" in names
    heavy = ("trustme", "cryptography", "ssl", "asyncio", "h11", "pytest_multiconn.tls")
    assert [n for n in names if any(n == h or n.startswith(h + ".") for h in heavy)] == []


def test_a_server_without_faults_imports_no_toxic_fake_or_script() -> None:
    # The first echo server of a run imports the stream faults' base classes (a server takes
    # faults= and has a fault table), not the toxics themselves, the fakes' protocols (and the
    # exchanges under them) nor the scripted server: 16 of its 28 ms of imports, before.
    names = _imported(
        "import pytest_multiconn.plugin\n"
        "from pytest_multiconn.plugin.factory import EchoServerFactory\n"
        "from pytest_multiconn.servers.echo import EchoServer\n"
        "with EchoServer() as server:\n"
        "    server.stats()\n"
    )
    assert "pytest_multiconn.faults.toxics.base" in names
    deferred = ("pytest_multiconn.faults.toxics.", "pytest_multiconn.exchanges",
                "pytest_multiconn.servers.fakes", "pytest_multiconn.servers.scripted",
                "pytest_multiconn.faults.conditions", "pytest_multiconn.faults.client")
    assert [
        n for n in names
        if n.startswith(deferred) and n != "pytest_multiconn.faults.toxics.base"
    ] == []


@pytest.mark.parametrize("first", ["limit_data", "truncate"])
def test_toxics_keep_their_order_whichever_is_imported_first(first: str) -> None:
    # Each toxic registers itself when its module is imported; imported on first use, one
    # can come first, and TOXICS still lists them in toxiproxy's order (the CLI's help, the
    # catalogue and the docs follow it).
    done = subprocess.run(
        [sys.executable, "-c",
         f"import pytest_multiconn.faults.toxics.{first}\n"
         "from pytest_multiconn.faults import TOXICS\n"
         "print(' '.join(TOXICS))\n"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert done.stdout.split() == [
        "latency", "bandwidth", "slicer", "limit_data", "timeout", "reset_peer", "slow_close",
        "corrupt", "substitute", "coalesce", "truncate",
    ]


def test_the_package_is_imported_without_pytest_assertion_rewriting(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest marks every package of a plugin's distribution for assertion rewriting; under
    # PYTHONDONTWRITEBYTECODE=1 a rewritten module is parsed and compiled at each import
    # (the first server of a run: ~80 ms instead of ~16).  The plugin takes the package off
    # that list, so its modules load as Python loads them.  The test module itself is the
    # control: rewritten, by its file name.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    pytester.makepyfile(
        test_loaders="""
        import sys

        def loader_of(name):
            return type(sys.modules[name].__loader__).__name__

        def test_loaders(multiconn_server):
            assert loader_of(__name__) == "AssertionRewritingHook"
            # First use (the fixture's), and a sub-plugin the plugin registers at start.
            for name in ("pytest_multiconn.servers.echo", "pytest_multiconn.core.server",
                         "pytest_multiconn.plugin.factory", "pytest_multiconn.plugin.udp"):
                assert loader_of(name) != "AssertionRewritingHook", name
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
