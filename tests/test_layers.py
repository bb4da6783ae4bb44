"""The package's layers: no import cycle, and every import points down (see ARCHITECTURE.md).

The import graph is read from the source (``ast``), so it holds every import: at module level,
inside functions (lazy imports) and under ``if TYPE_CHECKING:`` alike; a cycle through any of
them is a cycle of the design, whether or not Python happens to survive it at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import pytest_multiconn

PACKAGE = "pytest_multiconn"
SRC = Path(pytest_multiconn.__file__).resolve().parent

#: Bottom to top.  A module may import from its own subpackage and from any layer below its
#: own; subpackages on one line are peers and must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("core",),
    ("exchanges",),
    ("tls",),
    ("faults",),
    ("servers",),
    ("client",),
    ("proxy",),
    ("udp",),
    ("suite", "toxiproxy"),
    ("plugin", "cli"),
    # The public namespaces re-export from everywhere; nothing inside the package may import
    # them (``strategies`` is Hypothesis glue over servers, proxy and faults, for users'
    # property tests).
    ("__init__", "lowlevel", "fixtures", "__main__", "strategies"),
]

#: Imports that break the rules today, each with the reason and who removes it.  Other
#: sessions are removing these; an entry that no longer matches fails the test, so the list
#: only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    # The suite's ``--pyargs`` pytest module runs under pytest and reads the plugin's
    # --multiconn-* options; the pytest-free suite itself (checks, probes) does not.
    ("pytest_multiconn.suite.test_contracts", "pytest_multiconn.plugin.options"): "pytest module",
}


def _layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(
        f"{module}: subpackage {top!r} is in no layer; add it to LAYERS in tests/test_layers.py "
        "and to ARCHITECTURE.md"
    )


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [PACKAGE, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an import of ``name`` runs (None: outside the package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    target = _resolve(alias.name, modules)
                    if target is not None:
                        yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                prefix = node.module or ""
            if not prefix.startswith(PACKAGE):
                continue
            for alias in node.names:
                # ``from pkg import submodule`` imports the submodule; ``from pkg import name``
                # imports pkg.
                target = _resolve(f"{prefix}.{alias.name}", modules)
                if target is not None:
                    yield target, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for target, line in _imports(module, path, modules):
            if target != module:
                edges.setdefault(target, line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _allowed_graph() -> dict[str, dict[str, int]]:
    graph = _graph()
    return {
        src: {dst: line for dst, line in edges.items() if (src, dst) not in ALLOWED}
        for src, edges in graph.items()
    }


def test_the_import_graph_has_no_cycle() -> None:
    cycles = _cycles(_allowed_graph())
    assert not cycles, "import cycles (TYPE_CHECKING and lazy imports count):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in cycles
    )


def test_imports_point_down() -> None:
    wrong = []
    for src, edges in _allowed_graph().items():
        for dst, line in edges.items():
            if _package_of(src) == _package_of(dst) and _package_of(src) != "__init__":
                continue  # inside one subpackage: only cycles are forbidden
            if _layer_of(dst) >= _layer_of(src):
                wrong.append(f"  {src}:{line} imports {dst} (not below it)")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(wrong))


def test_core_knows_nothing_of_tls_faults_proxy_or_pytest() -> None:
    # Stricter than "points down" for the third-party side: core imports no ssl, trustme or
    # pytest (a layer above brings them).
    offenders = []
    for path in sorted((SRC / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("ssl", "trustme", "pytest", "_pytest"):
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert not offenders, offenders


@pytest.mark.parametrize("pair", sorted(ALLOWED))
def test_every_allowed_exception_is_still_needed(pair: tuple[str, str]) -> None:
    src, dst = pair
    assert dst in _graph().get(src, {}), (
        f"{src} no longer imports {dst}: remove the entry from ALLOWED in tests/test_layers.py"
    )


def test_the_checker_sees_cycles_and_upward_imports(tmp_path: Path) -> None:
    # The checker itself, on a graph with a known cycle: a test that cannot fail proves nothing.
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _layer_of("pytest_multiconn.core.loop") < _layer_of("pytest_multiconn.tls.stream")
    assert _layer_of("pytest_multiconn.faults.tls") < _layer_of("pytest_multiconn.servers.echo")
    assert _layer_of("pytest_multiconn") == len(LAYERS) - 1
    edges = _graph()
    # The graph holds TYPE_CHECKING and function-level imports too.
    assert "pytest_multiconn.core.loop" in edges["pytest_multiconn.faults.client"]  # TYPE_CHECKING
    assert "pytest_multiconn.cli.tls_args" in edges["pytest_multiconn.cli.suite"]  # in a function
    assert "pytest_multiconn.tls.config" in edges["pytest_multiconn.servers.echo"]
