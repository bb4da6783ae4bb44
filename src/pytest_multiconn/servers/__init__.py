"""Servers built on core's :class:`~pytest_multiconn.core.server.ServerBase` (above ``tls``).

The public names are re-exported from the top level (``EchoServer``) and
:mod:`pytest_multiconn.lowlevel` (``EchoConnection``).
"""
