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
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return nodeid
    group = marker.args[0] if marker.args else marker.kwargs.get("name", "default")
    suffix = f"@{group}"
    return nodeid[: -len(suffix)] if nodeid.endswith(suffix) else nodeid
