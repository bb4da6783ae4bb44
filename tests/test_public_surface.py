"""The public surface a newcomer has to hold (issue 23): what each namespace exports, and that
the names of earlier releases are gone instead of kept as warning aliases."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


#: Every public namespace (ARCHITECTURE.md); the top level is the first.
NAMESPACES = [
    "pytest_multiconn",
    "pytest_multiconn.client",
    "pytest_multiconn.errors",
    "pytest_multiconn.exchanges",
    "pytest_multiconn.faults",
    "pytest_multiconn.fixtures",
    "pytest_multiconn.lowlevel",
    "pytest_multiconn.proxy",
    "pytest_multiconn.servers",
    "pytest_multiconn.strategies",
    "pytest_multiconn.suite",
    "pytest_multiconn.tls",
    "pytest_multiconn.toxiproxy",
    "pytest_multiconn.udp",
]

#: Names two namespaces export as different objects on purpose, each with the reason.
SAME_IDEA = {
    # The same fault on a datagram (udp) and on a byte stream (faults, proxy).
    "Corrupt": "a datagram's twin of the stream fault",
    "Truncate": "a datagram's twin of the stream fault",
}


def test_the_top_level_is_small_and_everything_in_it_resolves() -> None:
    import pytest_multiconn

    names = pytest_multiconn.__all__
    assert len(names) <= 25, f"{len(names)} top-level names: {sorted(names)}"
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(pytest_multiconn, name) is not None, name


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_each_namespace_says_what_it_is_for(namespace: str) -> None:
    module = importlib.import_module(namespace)
    doc = (module.__doc__ or "").strip()
    first = doc.split("\n\n", 1)[0]
    # A summary paragraph of at most three lines, then the details.
    assert first, f"{namespace} has no docstring"
    assert len(first.splitlines()) <= 3, f"{namespace}'s summary is {first!r}"


def test_no_name_means_two_things() -> None:
    """A name exported by two namespaces is the same object in both (or listed above)."""
    seen: dict[str, tuple[str, object]] = {}
    clashes = []
    for namespace in NAMESPACES:
        module = importlib.import_module(namespace)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            first = seen.setdefault(name, (namespace, value))
            if first[1] is not value and name not in SAME_IDEA:
                clashes.append(f"{name}: {first[0]} and {namespace}")
    assert not clashes, clashes
    # The scripted server's steps have names of their own, apart from the client faults.
    servers = importlib.import_module("pytest_multiconn.servers")
    faults = importlib.import_module("pytest_multiconn.faults")
    for step in ("Abort", "Hang", "WriteEOF"):
        assert not hasattr(faults, step), step
    for old in ("HalfClose", "Reset", "Stall"):
        assert not hasattr(servers, old), old


def _servers_with_a_timeout(timeout: object) -> list[tuple[str, Callable[[], Any]]]:
    """Every server and proxy, built with ``timeout=`` (the one way to set it)."""
    from pytest_multiconn import EchoServer, FaultProxy
    from pytest_multiconn.servers import EchoProtocol, ProtocolServer, ScriptedServer
    from pytest_multiconn.udp import UDPEchoServer, UDPFaultProxy

    target = ("127.0.0.1", 9)  # never connected to: only constructed
    return [
        ("EchoServer", lambda: EchoServer(timeout=timeout)),
        ("ProtocolServer", lambda: ProtocolServer(EchoProtocol, timeout=timeout)),
        ("ScriptedServer", lambda: ScriptedServer([], timeout=timeout)),
        ("FaultProxy", lambda: FaultProxy(target, timeout=timeout)),
        ("UDPEchoServer", lambda: UDPEchoServer(timeout=timeout)),
        ("UDPFaultProxy", lambda: UDPFaultProxy(target, timeout=timeout)),
    ]


@pytest.mark.parametrize("index", range(6), ids=[n for n, _ in _servers_with_a_timeout(1)])
def test_timeout_is_a_constructor_argument_everywhere(index: int) -> None:
    name, make = _servers_with_a_timeout(0.25)[index]
    assert make().timeout == 0.25, name
    for bad in (-1, float("nan"), float("inf"), "1", True):
        _, make_bad = _servers_with_a_timeout(bad)[index]
        with pytest.raises(ValueError, match="timeout"):
            make_bad()


def test_a_constructor_timeout_bounds_the_waits() -> None:
    from pytest_multiconn import EchoServer, WaitTimeout

    # Nobody connects, so the wait can only end by its bound: the constructor's 0.2 s.
    with EchoServer(timeout=0.2) as server, pytest.raises(WaitTimeout, match=r"after 0\.2s"):
        server.wait_for_connections(1)


def test_an_address_is_one_type_a_path_like_unix_socket_included(tmp_path: Path) -> None:
    """``Address`` (core/address.py) is what clients and proxies take, a path-like Unix
    socket path included (the client refused a ``pathlib.Path`` before it was typed)."""
    from pytest_multiconn import EchoServer, FaultProxy, MultiConnClient

    with EchoServer(unix_path=tmp_path / "echo.sock") as server, FaultProxy(
        tmp_path / "echo.sock", tmp_path / "proxy.sock"
    ) as proxy:
        MultiConnClient(tmp_path / "echo.sock", 2, timeout=10).run().check()
        MultiConnClient(tmp_path / "proxy.sock", 2, timeout=10).run().check()
        assert proxy.address == str(tmp_path / "proxy.sock")
        assert server.wait_for_closed(4).accepted == 4


def test_a_failed_exchange_is_a_reply_mismatch_and_only_echo_an_echo_mismatch() -> None:
    """EchoMismatch means "the echo differed"; every other exchange (lines, HTTP...) fails
    with ReplyMismatch, even when no reply came at all (nothing listens)."""
    from pytest_multiconn import EchoMismatch, MultiConnClient, ReplyMismatch
    from pytest_multiconn.exchanges import Echo, Lines
    from pytest_multiconn.faults import ClosedPort

    with ClosedPort() as port:
        with pytest.raises(ReplyMismatch) as lines:
            MultiConnClient(port.address, 1, exchange=Lines(), timeout=5).run().check()
        assert not isinstance(lines.value, EchoMismatch)
        with pytest.raises(EchoMismatch):
            MultiConnClient(port.address, 1, exchange=Echo(), timeout=5).run().check()


def test_the_scripted_servers_waits_take_its_constructor_timeout() -> None:
    from pytest_multiconn import WaitTimeout
    from pytest_multiconn.servers import Expect, ScriptedServer

    # No client comes, so the wait can only end by the server's own bound.
    server = ScriptedServer([Expect(n=1)], timeout=0.2, optional=True)
    with server, pytest.raises(WaitTimeout, match=r"after 0\.2s"):
        server.wait_for_scripts(1)
