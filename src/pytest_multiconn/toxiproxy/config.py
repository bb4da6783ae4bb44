"""``--config FILE``: toxiproxy's populate format, a JSON array of proxies.

    [{"name": "redis", "listen": "127.0.0.1:26379", "upstream": "127.0.0.1:6379"},
     {"name": "web", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:8080", "enabled": false}]

Unlike toxiproxy (which logs a bad file and starts without it), a file that cannot be read or
checked is an error naming the file and the entry, so a test run never starts half-configured.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pytest_multiconn.errors import ToxiproxyConfigError, ToxiproxyError
from pytest_multiconn.toxiproxy.api import ProxySpec, parse_populate

#: A config file larger than this is refused (it is a list of a few proxies).
MAX_CONFIG_BYTES = 1024 * 1024


def read_config(path: str | os.PathLike[str]) -> list[Any]:
    """The JSON array in ``path``, parsed and checked (the raw list, ready for populate)."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ToxiproxyConfigError(f"cannot read toxiproxy config {where!r}: {exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ToxiproxyConfigError(
            f"toxiproxy config {where!r} is larger than {MAX_CONFIG_BYTES} bytes"
        )
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToxiproxyConfigError(f"toxiproxy config {where!r} is not JSON: {exc}") from None
    except RecursionError:
        raise ToxiproxyConfigError(
            f"toxiproxy config {where!r} nests JSON too deeply (a populate list nests 3 deep)"
        ) from None
    check_config(body, where)
    return list(body)


def check_config(body: object, source: str) -> list[ProxySpec]:
    """Check a populate list, raising :class:`ToxiproxyConfigError` naming ``source``."""
    try:
        return parse_populate(body, source)
    except ToxiproxyError as exc:
        raise ToxiproxyConfigError(f"toxiproxy config {source!r}: {exc}") from None


__all__ = ["check_config", "read_config"]
