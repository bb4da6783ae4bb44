"""The bottom layer: selector loop, connection, listener, server base, addresses, seeds, waits.

It knows nothing of TLS, faults, the proxy or pytest; everything above builds on it.  Its public
names are re-exported by :mod:`pytest_multiconn.lowlevel`.
"""
