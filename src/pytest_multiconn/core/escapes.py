"""Bytes typed as text: what ``--send``, ``--expect``, ``--fault substitute:pattern=...`` and
the ``--pyargs`` suite's ini options accept.

Python's own escapes (``\\r \\n \\t \\\\ \\xNN``) spell any byte; an ASCII character stands
for itself and any other character for its UTF-8 bytes (what a UTF-8 terminal sends).
"""

from __future__ import annotations

import codecs

__all__ = ["unescape"]


def unescape(text: str) -> bytes:
    """``"PING\\r\\n"`` (the six characters) -> ``b"PING\\r\\n"``."""
    if not isinstance(text, str):
        raise TypeError(f"expected text with \\r \\n \\xNN escapes, got {text!r}")
    # unicode_escape reads its input as Latin-1 and would turn "ü" into the one byte 0xfc:
    # spell non-ASCII characters as escapes of their UTF-8 bytes first.
    raw = "".join(
        ch if ch.isascii() else "".join(f"\\x{b:02x}" for b in ch.encode("utf-8"))
        for ch in text
    )
    try:
        return codecs.decode(raw, "unicode_escape").encode("latin-1")
    except UnicodeDecodeError as exc:  # a dangling backslash or a short \x escape
        raise ValueError(f"bad escape in {text!r}: {exc.reason}") from None
