"""One run seed, from which every random choice in a run is derived.

A fault's random numbers come from ``random.Random`` seeded with the run seed and a stable
label (the test's node id, a connection number...), so a failing test replays with the same
chunk boundaries and delays when the run seed is given again (``--multiconn-seed N``).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading

_lock = threading.Lock()
_run_seed: int | None = None

#: Environment variable that carries the run seed to pytest-xdist workers and subprocesses.
SEED_ENV = "PYTEST_MULTICONN_SEED"


def new_seed() -> int:
    """A fresh random seed that is short enough to type back (0 .. 2**32 - 1)."""
    return random.SystemRandom().randrange(2**32)


def set_run_seed(seed: int) -> None:
    global _run_seed  # noqa: PLW0603 - one seed per process, by design
    with _lock:
        _run_seed = int(seed)


def swap_run_seed(seed: int | None) -> int | None:
    """Set the run seed to ``seed`` (None: unset, so the next :func:`get_run_seed` reads
    ``$PYTEST_MULTICONN_SEED`` or makes one) and return the one set before, or None.

    For a nested run (pytester) that must hand the outer run its own seed back when it ends.
    """
    global _run_seed
    with _lock:
        previous, _run_seed = _run_seed, None if seed is None else int(seed)
        return previous


def get_run_seed() -> int:
    """The run seed: set explicitly, else from ``$PYTEST_MULTICONN_SEED``, else made now."""
    global _run_seed  # noqa: PLW0603 - one seed per process, by design
    with _lock:
        if _run_seed is None:
            env = os.environ.get(SEED_ENV, "").strip()
            _run_seed = int(env) if env.isdigit() else new_seed()
        return _run_seed


def derive_seed(seed: int, *labels: object) -> int:
    """A stable 64-bit seed from ``seed`` and labels (stable across processes, unlike hash())."""
    text = "\x1f".join([str(seed), *map(str, labels)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def rng_for(*labels: object, seed: int | None = None) -> random.Random:
    """``random.Random`` for ``labels`` (node id, connection number...) under the run seed."""
    return random.Random(derive_seed(get_run_seed() if seed is None else seed, *labels))


_test_id: str | None = None


def set_current_test_id(nodeid: str | None) -> str | None:
    """Name the test running now (the pytest plugin does, around each test); returns the
    previous name so a nested (pytester) run can restore it.

    The plugin passes the node id without pytest-xdist's ``@group`` suffix (``--dist
    loadgroup`` adds it), so a test's seeds are the same with and without xdist.
    """
    global _test_id
    previous, _test_id = _test_id, nodeid
    return previous


def current_test_id() -> str | None:
    """The node id of the pytest test running now (set by the plugin, else from
    ``$PYTEST_CURRENT_TEST``), if any."""
    if _test_id is not None:
        return _test_id
    current = os.environ.get("PYTEST_CURRENT_TEST")
    return current.rsplit(" ", 1)[0] if current else None


def default_seed() -> int:
    """The seed a client uses when given none: the run seed mixed with the running test's node
    id (so each test has its own schedule, and ``--multiconn-seed N`` replays all of them)."""
    test = current_test_id()
    run = get_run_seed()
    return run if test is None else derive_seed(run, test)
