"""The version matrix: Python 3.11, 3.12, 3.13 x pytest 7.4, latest 8.x, latest 9.x.

``make matrix`` (``nox -s tests``) runs the whole suite in every cell; ``nox -s smoke`` runs
a few version-sensitive test files in every cell (``.ci/run`` does, within its time limit);
``nox -l`` lists the cells, ``nox -s "tests-3.12(pytest8)"`` runs one.

Interpreters are looked up as ``python3.X`` on PATH and then under pyenv's versions
directory, so pyenv-installed Pythons work without activating them; nox never downloads one.
A cell whose interpreter is missing fails (set ``MATRIX_ALLOW_MISSING=1`` to skip it).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

PYTHONS = ["3.11", "3.12", "3.13"]

#: Cell id -> requirement.  "Latest 8.x/9.x" is whatever the index has when the cell runs.
PYTESTS = {"7.4": "pytest==7.4.4", "8": "pytest>=8,<9", "9": "pytest>=9,<10"}

#: Version-sensitive tests: option and typed ini handling (pytest 8.4 and 9 differ), usage
#: errors, hook wrappers, the fixtures' wait bounds, xdist's loadgroup node ids.
SMOKE_TESTS = ["tests/test_plugin_options.py"]

nox.options.default_venv_backend = "uv|venv"
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = not os.environ.get("MATRIX_ALLOW_MISSING")
nox.options.sessions = ["tests"]


def _works(python: str) -> bool:
    try:
        # S603: runs an interpreter found on PATH or under pyenv, which is the point.
        subprocess.run([python, "-c", "pass"], check=True, capture_output=True, timeout=30)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _find_interpreters() -> None:
    """Put a working ``python3.X`` for each cell on PATH (pyenv's shims fail for a version
    that is installed but not active, and nox would then call the interpreter missing)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    extra: list[str] = []
    for version in PYTHONS:
        found = shutil.which(f"python{version}")
        if found and _works(found):
            continue
        for candidate in sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}")):
            if _works(candidate):
                extra.append(os.path.dirname(candidate))
                break
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])


_find_interpreters()
CELLS = PYTHONS


def _install(session: nox.Session, pytest_id: str, *extras: str) -> None:
    spec = ".[" + ",".join(extras) + "]" if extras else "."
    # One resolver run, so the pytest pin and our own requirements (pluggy >= 1.2) agree.
    session.install(spec, PYTESTS[pytest_id])
    session.run("python", "-m", "pytest", "--version")


@nox.session(python=CELLS)
@nox.parametrize("pytest_id", list(PYTESTS), ids=[f"pytest{k}" for k in PYTESTS])
def tests(session: nox.Session, pytest_id: str) -> None:
    """The whole suite, in parallel (posargs replace the default arguments)."""
    _install(session, pytest_id, "test")
    args = session.posargs or ["-n", "2", "-q", "-p", "no:randomly"]
    session.run("python", "-m", "pytest", *args)


@nox.session(python=CELLS)
@nox.parametrize("pytest_id", list(PYTESTS), ids=[f"pytest{k}" for k in PYTESTS])
def smoke(session: nox.Session, pytest_id: str) -> None:
    """A quick check of the version-sensitive parts."""
    _install(session, pytest_id, "test")
    args = session.posargs or ["-n", "2", "-q", "-p", "no:randomly", *SMOKE_TESTS]
    session.run("python", "-m", "pytest", *args)
