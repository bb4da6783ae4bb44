"""A test's node id as the user types it back: without pytest-xdist's ``@group`` suffix.

Under ``--dist loadgroup`` xdist renames every item marked ``xdist_group("g")`` to
``<nodeid>@g``.  Seeds derived from that name would differ from the same test under ``-n 0``,
and a replay command naming it fails with "not found"; every seed and replay command of ours
is made from :func:`base_nodeid` instead.

:func:`running_item` is the test whose protocol runs now, so that the hottest fixtures need not
take ``request`` (pytest builds a fixture definition, with ``inspect.signature``, each time a
fixture asks for it: about 50 us a test on the 2-core CI machine, issue 25).

:func:`fixture_seeds` is the one seed policy of every fixture that makes seeded objects (fault
proxies, faulty servers and clients, UDP proxies, the toxiproxy server).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from pytest_multiconn.core.seed import derive_seed, get_run_seed

# The tests whose protocol runs now, innermost last (an in-process pytester run nests one).
_RUNNING: list[pytest.Item] = []


def enter_test(item: pytest.Item) -> None:
    """Called by the plugin's ``pytest_runtest_protocol`` wrapper as ``item`` starts."""
    _RUNNING.append(item)


def leave_test(item: pytest.Item) -> None:
    """Called as ``item``'s protocol ends (also when it raised); the wrapper pairs it with
    :func:`enter_test` in ``try``/``finally``, so ``item`` is the innermost."""
    if _RUNNING and _RUNNING[-1] is item:
        _RUNNING.pop()


def running_item() -> pytest.Item:
    """The test whose setup, call or teardown runs now (what ``request.node`` is for a
    function-scoped fixture)."""
    if not _RUNNING:
        raise RuntimeError(
            "pytest-multiconn: no test is running; a function-scoped multiconn fixture was "
            "set up outside pytest_runtest_protocol (is the multiconn plugin registered?)"
        )
    return _RUNNING[-1]


def base_nodeid(item: pytest.Item) -> str:
    """``item.nodeid`` without the ``@group`` suffix that ``--dist loadgroup`` appends."""
    nodeid = item.nodeid
    if "@" not in nodeid:  # no suffix to strip (the common case: walking markers costs more)
        return nodeid
    names = [
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    ]
    if not names:
        return nodeid
    # xdist >= 3.6 joins every group of the item, sorted; older releases used the closest.
    for group in ("_".join(sorted(set(names))), names[0]):
        suffix = f"@{group}"
        if nodeid.endswith(suffix):
            return nodeid[: -len(suffix)]
    return nodeid


def fixture_seeds(item: pytest.Item, kind: str) -> Iterator[int]:
    """The seeds of the objects of one ``kind`` a fixture makes for the test ``item``: the
    k-th (from 1) is derived from the run seed, the test's node id, ``kind`` and k.

    So two tests, and two objects of one test, draw different numbers, and a rerun with the
    same ``--multiconn-seed N`` gets the same ones; each fault's own numbers then come from
    this seed and the fault's name (``fault_rng``).
    """
    run, nodeid = get_run_seed(), base_nodeid(item)
    return (derive_seed(run, nodeid, kind, k) for k in itertools.count(1))
