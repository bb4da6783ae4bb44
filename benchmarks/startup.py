"""What installing the plugin adds to every pytest start (issue 25), as a user's wall clock sees it.

    python benchmarks/startup.py [--rounds N] [--json FILE]

In a fresh temporary directory (no conftest, no ini file above it that matters: ``-c`` points
at an empty ``pytest.ini`` there), a one-test file runs in a fresh ``python -m pytest -q
-p no:cacheprovider`` subprocess, alternately with the plugin and with ``-p no:multiconn``
(interleaved pairs, the order flipped every round so neither side always runs second).  The
headline is the median of the per-pair differences (with - without) and the ratio of the
medians, from the same run.  Other installed plugins are loaded on both sides alike.

Beside it, ``python -X importtime -c "import pytest_multiconn.plugin"`` and the same for the
plugin with its sub-plugins: the cumulative import time of the plugin module and what it
imports beyond pytest (median of ``--rounds`` runs, each in a fresh interpreter).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, machine_note

TEST = "def test_one():\n    assert 1 + 1 == 2\n"

_SUB_PLUGINS = (
    "import pytest_multiconn.plugin as p\nfor name in p.pytest_plugins:\n    __import__(name)\n"
)


def _pytest_wall(project: Path, *extra: str) -> float:
    cmd = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini",
           *extra, "one_test.py"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return wall


def _importtime(code: str, module: str = "pytest_multiconn.plugin") -> tuple[float, float, float]:
    """(cumulative import time of ``module``, of pytest, of everything) in ms (-X importtime)."""
    done = subprocess.run([PYTHON, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, check=True)  # fmt: skip
    cumulative: dict[str, float] = {}
    total = 0.0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            value = int(parts[1]) / 1000
        except ValueError:
            continue  # the header line
        name = parts[2].strip()
        if parts[2].startswith(" ") and not parts[2].startswith("  "):  # top level
            total += value
        cumulative[name] = value
    return cumulative.get(module, float("nan")), cumulative.get("pytest", 0.0), total


def run(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="multiconn-startup-") as tmp:
        project = Path(tmp)
        (project / "one_test.py").write_text(TEST)
        (project / "pytest.ini").write_text("[pytest]\n")
        # Untimed first runs: bytecode compiled, page cache warm, on both sides.
        _pytest_wall(project)
        _pytest_wall(project, "-p", "no:multiconn")
        with_plugin: list[float] = []
        without: list[float] = []
        for i in range(rounds):
            if i % 2:
                without.append(_pytest_wall(project, "-p", "no:multiconn"))
                with_plugin.append(_pytest_wall(project))
            else:
                with_plugin.append(_pytest_wall(project))
                without.append(_pytest_wall(project, "-p", "no:multiconn"))
    diffs = [a - b for a, b in zip(with_plugin, without, strict=True)]
    plugin_alone = [_importtime("import pytest_multiconn.plugin") for _ in range(rounds)]
    with_subs = [_importtime(_SUB_PLUGINS) for _ in range(rounds)]
    return {
        "rounds": rounds,
        "with_plugin_ms": [round(x * 1000, 1) for x in with_plugin],
        "without_ms": [round(x * 1000, 1) for x in without],
        "median_with_ms": statistics.median(with_plugin) * 1000,
        "median_without_ms": statistics.median(without) * 1000,
        "median_added_ms": statistics.median(diffs) * 1000,
        "ratio": statistics.median(with_plugin) / statistics.median(without),
        "import_plugin_ms": statistics.median(p for p, _, _ in plugin_alone),
        "import_plugin_beyond_pytest_ms": statistics.median(p - q for p, q, _ in plugin_alone),
        "import_all_sub_plugins_beyond_pytest_ms": statistics.median(
            t - q for _, q, t in with_subs
        ),
        "machine": machine_note(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    res = run(args.rounds)
    print(f"pytest start-up, one test, {res['rounds']} interleaved pairs ({res['machine']})")
    print(f"  with the plugin        median {res['median_with_ms']:.0f} ms")
    print(f"  -p no:multiconn        median {res['median_without_ms']:.0f} ms")
    print(f"  added (median of pairs) {res['median_added_ms']:+.1f} ms  "
          f"(ratio of medians {res['ratio']:.3f})")  # fmt: skip
    print(
        f"  import pytest_multiconn.plugin: {res['import_plugin_ms']:.1f} ms cumulative, "
        f"{res['import_plugin_beyond_pytest_ms']:.1f} ms beyond pytest; with every "
        f"sub-plugin {res['import_all_sub_plugins_beyond_pytest_ms']:.1f} ms beyond pytest"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
