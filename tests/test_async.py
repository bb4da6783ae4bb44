"""Async tests: our awaitable twins on asyncio and trio, against servers on the test's own loop.

Each test project runs in ``pytester`` with plugin autoload off, so only the plugins named on
its command line load (pytest-asyncio in auto or strict mode, anyio's plugin with the asyncio and
trio backends), whatever the outer run has installed.
"""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("anyio")
pytest.importorskip("trio")
pytest.importorskip("pytest_asyncio")

ASYNCIO_SERVERS = '''
import asyncio


async def echo_with_drain(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def echo_without_drain(reader, writer):
    # Never awaits drain(): a client that never reads makes this server buffer without bound.
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


async def start(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[:2]
'''


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "pytest_multiconn.plugin", *args, "-q")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1, out
    assert not outcomes.get("failed"), out


CLIENT_TESTS = '''
import pytest

from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.errors import BlockingCallError
from servers import echo_with_drain, start

{marker}
async def test_client_against_an_in_loop_server():
    server, address = await start(echo_with_drain)
    async with server:
        results = await MultiConnClient(address, 5).arun()
    results.check()
    assert len(results) == 5


{marker}
async def test_blocking_call_fails_at_once_naming_the_twin():
    server, address = await start(echo_with_drain)
    async with server:
        with pytest.raises(BlockingCallError, match=r"await .*arun\\(\\)"):
            MultiConnClient(address, 1).run()


{marker}
async def test_our_server_as_async_context_manager():
    async with EchoServer() as server:
        results = await MultiConnClient(server.address, 3).arun()
        results.check()
        stats = await server.await_for_closed(3)
        assert stats.bytes_in == 3 * 44
        with pytest.raises(BlockingCallError, match="await_for_closed"):
            server.wait_for_closed(3)
'''


def test_pytest_asyncio_strict_mode(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(servers=ASYNCIO_SERVERS)
    pytester.makepyfile(test_it=CLIENT_TESTS.format(marker="@pytest.mark.asyncio"))
    _run(pytester, monkeypatch, "-p", "pytest_asyncio.plugin", "-o", "asyncio_mode=strict",
         "-o", "asyncio_default_fixture_loop_scope=function")


def test_pytest_asyncio_auto_mode(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(servers=ASYNCIO_SERVERS)
    pytester.makepyfile(test_it=CLIENT_TESTS.format(marker=""))
    _run(pytester, monkeypatch, "-p", "pytest_asyncio.plugin", "-o", "asyncio_mode=auto",
         "-o", "asyncio_default_fixture_loop_scope=function")


ANYIO_TESTS = '''
import anyio
import pytest

from pytest_multiconn import EchoServer, FaultProxy, MultiConnClient
from pytest_multiconn.errors import BlockingCallError

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def _echo(stream):
    async with stream:
        try:
            async for data in stream:
                await stream.send(data)
        except anyio.BrokenResourceError:
            pass


async def test_client_against_an_in_loop_anyio_server(anyio_backend):
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    address = listener.extra(anyio.abc.SocketAttribute.local_address)[:2]
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _echo)
        results = await MultiConnClient(address, 4).arun()
        tg.cancel_scope.cancel()
    results.check()


async def test_blocking_wait_fails_at_once(anyio_backend):
    async with EchoServer() as server:
        with pytest.raises(BlockingCallError, match=anyio_backend):
            server.wait_for_accepted(1)


async def test_proxy_step_mode_twins(anyio_backend):
    async with EchoServer() as server, FaultProxy(server.address, hold=True) as proxy:
        stream = await anyio.connect_tcp(*proxy.address)
        async with stream:
            await stream.send(b"hello")
            conn = await proxy.await_for_connection()
            await conn.await_pending(5, "upstream")
            await conn.arelease(5, "upstream")
            conn.unhold()
            assert await stream.receive() == b"hello"
'''


def test_anyio_on_asyncio_and_trio(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_it=ANYIO_TESTS)
    _run(pytester, monkeypatch, "-p", "anyio.pytest_plugin")


SUITE_TESTS = '''
import pytest

from pytest_multiconn.suite import acheck_echo_server, arun_checks
from servers import echo_with_drain, echo_without_drain, start


@pytest.mark.asyncio
async def test_suite_passes_an_in_loop_server_with_drain():
    server, address = await start(echo_with_drain)
    async with server:
        await acheck_echo_server(address, seed=1)


@pytest.mark.asyncio
async def test_suite_fails_an_in_loop_server_without_drain():
    server, address = await start(echo_without_drain)
    async with server:
        report = await arun_checks(address, seed=1)
    failed = {{row.fault for row in report.rows if not row.passed}}
    assert "never_read" in failed, report
'''


def test_suite_against_in_loop_servers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(servers=ASYNCIO_SERVERS)
    pytester.makepyfile(test_it=textwrap.dedent(SUITE_TESTS.replace("{{", "{").replace("}}", "}")))
    _run(pytester, monkeypatch, "-p", "pytest_asyncio.plugin", "-o", "asyncio_mode=strict",
         "-o", "asyncio_default_fixture_loop_scope=function")
