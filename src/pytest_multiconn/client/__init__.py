"""The multi-connection client: ``MultiConnClient(address, n).run()`` and its results."""

from pytest_multiconn.client.multiconn import (
    DEFAULT_MESSAGES,
    ClientConnection,
    ClientResults,
    ConnectionResult,
    MultiConnClient,
    run_clients,
)
from pytest_multiconn.core.public import publish

__all__ = [
    "DEFAULT_MESSAGES",
    "ClientConnection",
    "ClientResults",
    "ConnectionResult",
    "MultiConnClient",
    "run_clients",
]

publish(__name__, globals(), __all__)
