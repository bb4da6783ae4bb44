"""The public surface a newcomer has to hold (issue 23): what each namespace exports, and that
the names of earlier releases are gone instead of kept as warning aliases."""

from __future__ import annotations

import importlib

import pytest

#: Old names removed with their deprecation shims (the CHANGELOG's "Removed" table): each is
#: (namespace, name).  Importing any of them is an AttributeError now, not a warning.
REMOVED = [
    ("pytest_multiconn", "PartialSend"),
    ("pytest_multiconn", "Reset"),
    ("pytest_multiconn", "Latency"),
    ("pytest_multiconn", "ProxyTranscript"),
    ("pytest_multiconn", "make_tls_pair"),
    ("pytest_multiconn", "Loop"),
    ("pytest_multiconn", "TLSConnectionMixin"),
    ("pytest_multiconn.faults", "Reset"),
    ("pytest_multiconn.faults.client", "Reset"),
    ("pytest_multiconn.tls", "TLSConnectionMixin"),
    ("pytest_multiconn.tls", "tls_connection_class"),
]


@pytest.mark.parametrize(("namespace", "name"), REMOVED, ids=[".".join(r) for r in REMOVED])
def test_removed_names_are_gone_without_a_warning(namespace: str, name: str) -> None:
    module = importlib.import_module(namespace)
    # filterwarnings = error: a shim that still warned would fail here as a warning first.
    with pytest.raises(AttributeError, match=name):
        getattr(module, name)


def test_the_testing_alias_module_is_gone() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pytest_multiconn\.testing"):
        importlib.import_module("pytest_multiconn.testing")
    assert importlib.import_module("pytest_multiconn.suite").check_echo_server is not None
