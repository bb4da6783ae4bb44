"""Every blocking wait of ours has its awaitable twin (docs/howto/async.md), and the
BlockingCallError raised when the blocking one runs inside an event loop names that twin."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import WAIT
from pytest_multiconn import EchoServer, FaultProxy, MultiConnClient
from pytest_multiconn.errors import BlockingCallError
from pytest_multiconn.lowlevel import ServerBase
from pytest_multiconn.proxy import ProxiedConnection
from pytest_multiconn.servers import (
    Close,
    Expect,
    LineProtocol,
    ProtocolServer,
    Reply,
    ScriptedServer,
)
from pytest_multiconn.toxiproxy import ToxiproxyServer
from pytest_multiconn.udp import (
    MultiDatagramClient,
    UDPEchoServer,
    UDPFaultProxy,
    UDPServerBase,
)

#: The public namespaces (ARCHITECTURE.md): what a user imports from.
PUBLIC = (
    "pytest_multiconn",
    "pytest_multiconn.client",
    "pytest_multiconn.exchanges",
    "pytest_multiconn.faults",
    "pytest_multiconn.lowlevel",
    "pytest_multiconn.proxy",
    "pytest_multiconn.servers",
    "pytest_multiconn.suite",
    "pytest_multiconn.tls",
    "pytest_multiconn.toxiproxy",
    "pytest_multiconn.udp",
)

#: A not-started instance of each public class with a blocking wait: the refusal comes
#: before anything else, so none needs to run.
INSTANCES: dict[type, Callable[[], Any]] = {
    EchoServer: EchoServer,
    FaultProxy: lambda: FaultProxy(("127.0.0.1", 9)),
    MultiConnClient: lambda: MultiConnClient(("127.0.0.1", 9), 1),
    ProtocolServer: lambda: ProtocolServer(LineProtocol),
    ProxiedConnection: lambda: ProxiedConnection(None, None, None),  # type: ignore[arg-type]
    ScriptedServer: lambda: ScriptedServer([]),
    ServerBase: ServerBase,
    ToxiproxyServer: ToxiproxyServer,
    UDPEchoServer: UDPEchoServer,
    UDPFaultProxy: lambda: UDPFaultProxy(("127.0.0.1", 9)),
    UDPServerBase: UDPEchoServer,  # abstract: its wait_for, through a subclass
}


def _blocking_waits() -> Iterator[tuple[type, str]]:
    seen: set[tuple[type, str]] = set()
    for name in PUBLIC:
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", ()):
            cls = getattr(module, public)
            if not inspect.isclass(cls) or getattr(cls, "_is_protocol", False):
                continue
            for attr in sorted(dir(cls)):
                if (
                    attr.startswith("wait")
                    and callable(getattr(cls, attr))
                    and (cls, attr) not in seen
                ):
                    seen.add((cls, attr))
                    yield cls, attr


WAITS = sorted(_blocking_waits(), key=lambda w: (w[0].__qualname__, w[1]))


def test_the_enumeration_finds_the_waits_the_docs_name() -> None:
    found = {f"{cls.__name__}.{attr}" for cls, attr in WAITS}
    for known in (
        "EchoServer.wait_for_closed",
        "FaultProxy.wait_for_connection",
        "MultiConnClient.wait_closed_by_peer",
        "ProxiedConnection.wait_pending",
        "ScriptedServer.wait_for_scripts",
        "UDPEchoServer.wait_for_datagrams",
        "UDPFaultProxy.wait_for_sessions",
    ):
        assert known in found, sorted(found)


@pytest.mark.parametrize(("cls", "attr"), WAITS, ids=[f"{c.__name__}.{a}" for c, a in WAITS])
def test_every_blocking_wait_has_an_awaitable_twin(cls: type, attr: str) -> None:
    twin = getattr(cls, "a" + attr, None)
    assert twin is not None, f"{cls.__name__}.{attr}() has no awaitable twin a{attr}()"
    assert inspect.iscoroutinefunction(twin), f"{cls.__name__}.a{attr} is not async"
    blocking = inspect.signature(getattr(cls, attr)).parameters
    awaitable = inspect.signature(twin).parameters
    assert list(awaitable) == list(blocking), (
        f"{cls.__name__}.a{attr}{inspect.signature(twin)} does not take the parameters of "
        f"{attr}{inspect.signature(getattr(cls, attr))}"
    )


def _arguments(method: Callable[..., Any]) -> list[Any]:
    args: list[Any] = []
    for param in inspect.signature(method).parameters.values():
        if param.default is not param.empty or param.kind not in (
            param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD
        ):
            continue
        args.append({"predicate": lambda stats: True, "sent": {}}.get(param.name, 1))
    return args


@pytest.mark.parametrize(("cls", "attr"), WAITS, ids=[f"{c.__name__}.{a}" for c, a in WAITS])
def test_a_blocking_wait_in_an_event_loop_names_its_twin(cls: type, attr: str) -> None:
    assert cls in INSTANCES, f"add a not-started {cls.__name__} to INSTANCES"
    obj = INSTANCES[cls]()
    method = getattr(obj, attr)

    async def main() -> None:
        method(*_arguments(method))

    with pytest.raises(BlockingCallError) as info:
        asyncio.run(main())
    assert f".a{attr}(" in str(info.value), str(info.value)
    assert f"{attr}()" in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiConnClient(("127.0.0.1", 9), 1),
        lambda: MultiDatagramClient(("127.0.0.1", 9)),
    ],
    ids=["MultiConnClient", "MultiDatagramClient"],
)
def test_client_runs_have_arun(make: Callable[[], Any]) -> None:
    client = make()
    assert inspect.iscoroutinefunction(type(client).arun)

    async def main() -> None:
        client.run()

    with pytest.raises(BlockingCallError, match=r"run\(\) blocks.*await client\.arun\(\)"):
        asyncio.run(main())


def test_await_for_scripts_waits_without_blocking_the_event_loop() -> None:
    # The client lives on the test's event loop: a blocking wait_for_scripts() there could
    # only time out; its twin waits in a worker thread while the client talks.
    script: list[Any] = [Expect(line=b"PING"), Reply(b"PONG\n"), Close()]

    async def main(server: ScriptedServer) -> bytes:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"PING\n")
        await server.await_for_scripts(1, timeout=WAIT)
        reply = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        await writer.wait_closed()
        return reply

    with ScriptedServer(script) as server:
        assert asyncio.run(main(server)) == b"PONG\n"
