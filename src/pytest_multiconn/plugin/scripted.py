"""The ``multiconn_scripted_server_factory`` fixture: a scripted server for testing your client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_multiconn.plugin.types import ScriptedServerFactory
    from pytest_multiconn.servers.scripted import ScriptedServer, Step


@pytest.fixture
def multiconn_scripted_server_factory(
    multiconn_timeout: float,
) -> Iterator[ScriptedServerFactory]:
    """Yields a factory: ``multiconn_scripted_server_factory(script)`` (or ``scripts=[...]``,
    ``cycle=True``, ``tls=True`` and every server option) starts a
    pytest_multiconn.servers.ScriptedServer on an ephemeral loopback port and returns
    it.  Function scope.  Teardown stops every server it started and fails the test with
    pytest_multiconn.errors.ScriptMismatch when a client sent something a script did
    not expect, or a script did not run to its end, including a script whose connection
    never came (naming the script and the step not reached); optional=True (or the
    indexes of the scripts=[...] that may go unused) says the client may not connect.
    """
    servers: list[ScriptedServer] = []

    def start(script: Sequence[Step] | None = None, **kwargs: Any) -> ScriptedServer:
        from pytest_multiconn.servers.scripted import ScriptedServer

        kwargs.setdefault("expect_timeout", multiconn_timeout)
        kwargs.setdefault("timeout", multiconn_timeout)
        server = ScriptedServer(script, **kwargs)
        servers.append(server)
        return server.start(multiconn_timeout)

    try:
        yield start
    finally:
        for server in reversed(servers):
            server.stop(multiconn_timeout)
        for server in servers:
            server.check()
