"""Root conftest.

It exists so that running ``pytest`` from the repository root anchors pytest's
rootdir (and conftest discovery) here. It intentionally defines nothing: the
pytest-multiconn plugin is loaded through its ``pytest11`` entry point.
"""
