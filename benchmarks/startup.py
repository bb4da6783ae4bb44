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

Two bytecode settings, measured in turn (``--cache`` picks one):

* ``warm``: Python may write bytecode, as it does by default; the writes go to a temporary
  ``PYTHONPYCACHEPREFIX`` (nothing is written into the tree or the venv), warmed by the untimed
  first runs.  pytest then reads the assertion-rewritten modules of every plugin from its cache.
* ``none``: ``PYTHONDONTWRITEBYTECODE=1`` (set on this workplace's machines, and common in
  container images), or an install pytest cannot write to.  pytest then parses, rewrites and
  compiles every module of every installed plugin's distribution at every start (it marks them
  all for assertion rewriting), so a plugin pays for each byte of source it imports at start:
  about twice a plain compile (``python benchmarks/startup.py --rewrite-cost`` prints both for
  the modules the plugin imports).
"""

from __future__ import annotations

import argparse
import json
import os
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

# SUB_PLUGINS since issue 25's seventh session; pytest_plugins before (to measure older trees).
_SUB_PLUGINS = (
    "import pytest_multiconn.plugin as p\n"
    "for name in getattr(p, 'SUB_PLUGINS', None) or p.pytest_plugins:\n"
    "    __import__(name)\n"
)


def _bytecode_env(cache: str, prefix: Path) -> dict[str, str]:
    """The environment of one side's runs: bytecode written to ``prefix`` (``warm``) or none."""
    env = dict(os.environ)
    if cache == "warm":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(prefix)
    else:
        env.pop("PYTHONPYCACHEPREFIX", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _pytest_wall(project: Path, *extra: str, env: dict[str, str] | None = None) -> float:
    cmd = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini",
           *extra, "one_test.py"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, check=False,
                          env=env)  # fmt: skip
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


def _pairs(rounds: int, cache: str) -> dict[str, Any]:
    """Interleaved pairs of one-test runs with and without the plugin, in one bytecode mode."""
    with tempfile.TemporaryDirectory(prefix="multiconn-startup-") as tmp:
        project = Path(tmp)
        (project / "one_test.py").write_text(TEST)
        (project / "pytest.ini").write_text("[pytest]\n")
        env = _bytecode_env(cache, project / "pycache")
        # Untimed first runs: bytecode compiled (and cached in ``warm``), page cache warm, on
        # both sides.
        _pytest_wall(project, env=env)
        _pytest_wall(project, "-p", "no:multiconn", env=env)
        with_plugin: list[float] = []
        without: list[float] = []
        for i in range(rounds):
            if i % 2:
                without.append(_pytest_wall(project, "-p", "no:multiconn", env=env))
                with_plugin.append(_pytest_wall(project, env=env))
            else:
                with_plugin.append(_pytest_wall(project, env=env))
                without.append(_pytest_wall(project, "-p", "no:multiconn", env=env))
    diffs = [a - b for a, b in zip(with_plugin, without, strict=True)]
    return {
        "with_plugin_ms": [round(x * 1000, 1) for x in with_plugin],
        "without_ms": [round(x * 1000, 1) for x in without],
        "median_with_ms": statistics.median(with_plugin) * 1000,
        "median_without_ms": statistics.median(without) * 1000,
        "median_added_ms": statistics.median(diffs) * 1000,
        "ratio": statistics.median(with_plugin) / statistics.median(without),
    }


def rewrite_cost() -> list[tuple[str, int, float, float]]:
    """(module, bytes, ms to assertion-rewrite it as pytest does, ms to compile it plainly)
    for each module of ours a pytest start imports: best of 9, in this process."""
    import ast
    import importlib.util

    from _pytest.assertion.rewrite import rewrite_asserts

    probe = subprocess.run(
        [PYTHON, "-c", _SUB_PLUGINS + "import sys\nprint(*sorted(m for m in sys.modules "
         "if m.startswith('pytest_multiconn')))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = []
    for name in probe.stdout.split():
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        path = spec.origin
        source = Path(path).read_bytes()

        def rewritten(source: bytes = source, path: str = path) -> None:
            tree = ast.parse(source, filename=path)
            rewrite_asserts(tree, source, path, None)
            compile(tree, path, "exec", dont_inherit=True)

        def plain(source: bytes = source, path: str = path) -> None:
            compile(source, path, "exec", dont_inherit=True)

        def best(fn: Any) -> float:
            times = []
            for _ in range(9):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times) * 1000

        rows.append((name, len(source), best(rewritten), best(plain)))
    return rows


def run(rounds: int, caches: tuple[str, ...] = ("warm", "none")) -> dict[str, Any]:
    modes = {cache: _pairs(rounds, cache) for cache in caches}
    plugin_alone = [_importtime("import pytest_multiconn.plugin") for _ in range(rounds)]
    with_subs = [_importtime(_SUB_PLUGINS) for _ in range(rounds)]
    return {
        "rounds": rounds,
        "modes": modes,
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
    parser.add_argument(
        "--cache", choices=("both", "warm", "none"), default="both",
        help="bytecode setting of the timed runs (default: both, one after the other)",
    )  # fmt: skip
    parser.add_argument(
        "--rewrite-cost", action="store_true",
        help="only print what assertion rewriting costs for each module the plugin imports",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rewrite_cost:
        rows = rewrite_cost()
        for name, size, rewritten, plain in rows:
            print(f"  {name:42s} {size:6d} B  rewrite {rewritten:6.2f} ms  compile {plain:6.2f} ms")
        print(
            f"  {len(rows)} modules, {sum(r[1] for r in rows)} B: rewrite "
            f"{sum(r[2] for r in rows):.1f} ms, compile {sum(r[3] for r in rows):.1f} ms"
        )
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    caches = ("warm", "none") if args.cache == "both" else (args.cache,)
    res = run(args.rounds, caches)
    print(f"pytest start-up, one test, {res['rounds']} interleaved pairs ({res['machine']})")
    for cache, mode in res["modes"].items():
        label = {"warm": "bytecode cached", "none": "PYTHONDONTWRITEBYTECODE=1"}[cache]
        print(f"  [{label}]")
        print(f"    with the plugin        median {mode['median_with_ms']:.0f} ms")
        print(f"    -p no:multiconn        median {mode['median_without_ms']:.0f} ms")
        print(f"    added (median of pairs) {mode['median_added_ms']:+.1f} ms  "
              f"(ratio of medians {mode['ratio']:.3f})")  # fmt: skip
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
