"""A test's node id as the user types it back: without pytest-xdist's ``@group`` suffix.

Under ``--dist loadgroup`` xdist renames every item marked ``xdist_group("g")`` to
``<nodeid>@g``.  Seeds derived from that name would differ from the same test under ``-n 0``,
and a replay command naming it fails with "not found"; every seed and replay command of ours
is made from :func:`base_nodeid` instead.
"""

from __future__ import annotations

import pytest


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
