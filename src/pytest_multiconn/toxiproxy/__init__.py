"""A drop-in toxiproxy server: toxiproxy's HTTP API over our :class:`FaultProxy`.

``ToxiproxyServer()`` (in-process, a context manager), the ``multiconn_toxiproxy`` fixture and
``multiconn toxiproxy-server`` serve the API toxiproxy clients speak (toxiproxy-python,
toxiproxy-ruby, toxiproxy-go's client, Testcontainers) without the Go daemon, with a seed that
really seeds every random draw.  The HTTP server needs h11: ``pip install
'pytest-multiconn[toxiproxy]'``.
"""

from pytest_multiconn.core.public import publish
from pytest_multiconn.toxiproxy.api import TOXIC_TYPES, ToxiproxyAPI
from pytest_multiconn.toxiproxy.http import ToxiproxyServer

__all__ = ["TOXIC_TYPES", "ToxiproxyAPI", "ToxiproxyServer"]

publish(__name__, globals(), __all__)
