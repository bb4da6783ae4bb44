"""Defaults shared by the client and the pytest plugin, in a module that imports nothing
(the plugin's signatures show them without importing the client: issue 25)."""

from __future__ import annotations

#: The tutorial's two messages.
DEFAULT_MESSAGES: tuple[bytes, ...] = (b"Message 1 from client.", b"Message 2 from client.")
