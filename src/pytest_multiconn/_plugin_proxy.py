"""pytest fixtures for the fault-injecting proxy (loaded by the ``multiconn`` plugin)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from ._errors import LeakError
from ._proxy import FaultProxy
from ._registry import live_servers

_PROXIES = pytest.StashKey[list[FaultProxy]]()


@pytest.fixture
def multiconn_proxy(
    request: pytest.FixtureRequest, multiconn_timeout: float
) -> Iterator[Callable[..., FaultProxy]]:
    """A factory: ``multiconn_proxy(target, **kwargs)`` starts a :class:`FaultProxy` in front of
    ``target`` (``(host, port)``, a Unix socket path or a started server) on an ephemeral
    loopback port and returns it; ``kwargs`` go to ``FaultProxy`` (``seed``, ``hold``...).

    Function scope.  A failing test's report gets a section with every proxied connection's
    transcript.  Teardown stops every proxy it started (bounded by ``--multiconn-timeout``),
    re-raises the first exception from a proxy's loop thread, and fails the test if a proxy
    started during it is still running.
    """
    before = {id(s) for s in live_servers()}
    proxies: list[FaultProxy] = []
    request.node.stash[_PROXIES] = proxies

    def make(target: Any, **kwargs: Any) -> FaultProxy:
        kwargs.setdefault("timeout", multiconn_timeout)
        proxy = FaultProxy(target, **kwargs)
        proxies.append(proxy)
        proxy.start(multiconn_timeout)
        return proxy

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for proxy in reversed(proxies):
            try:
                proxy.stop(multiconn_timeout)
            except BaseException as exc:  # noqa: BLE001 - every proxy is stopped before raising
                errors.append(exc)
        for proxy in proxies:
            try:
                proxy.check()
            except BaseException as exc:  # noqa: BLE001 - raised below, first one wins
                errors.append(exc)
        if errors:
            raise errors[0]
    # Only proxies: servers have their own fixture's leak check, which may run after this one.
    leaked = [s for s in live_servers() if isinstance(s, FaultProxy) and id(s) not in before]
    if leaked:
        for proxy in leaked:
            proxy.stop()
        raise LeakError(
            f"{request.node.nodeid} left {len(leaked)} proxy(ies) running: "
            f"{', '.join(map(repr, leaked))}. Use `with FaultProxy(...)` or the multiconn_proxy "
            "fixture, which stops them for you; they were stopped now"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed or call.when == "setup":
        return
    proxies = item.stash.get(_PROXIES, None)
    if proxies:
        text = "\n\n".join(proxy.report() for proxy in proxies)
        report.sections.append((f"multiconn proxy transcripts ({call.when})", text))
