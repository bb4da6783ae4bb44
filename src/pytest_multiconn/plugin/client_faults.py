"""Sub-plugin for client faults: the run seed, ``--multiconn-target``, and the fault fixtures.

The run seed is printed in the header, taken from ``--multiconn-seed N`` (or ini
``multiconn_seed``), shown in every failing multiconn test's report, and handed to xdist
workers through ``$PYTEST_MULTICONN_SEED`` (set here, in the controller, before they spawn).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_multiconn.core.defaults import DEFAULT_MESSAGES
from pytest_multiconn.core.seed import SEED_ENV, get_run_seed, swap_run_seed
from pytest_multiconn.plugin.nodeid import fixture_seeds
from pytest_multiconn.plugin.options import get_option, register_option, seed_value

if TYPE_CHECKING:
    from pytest_multiconn.client.multiconn import MultiConnClient
    from pytest_multiconn.core.address import Address
    from pytest_multiconn.faults.client import ClientFault
    from pytest_multiconn.plugin.types import FaultyClient, FaultyClientFactory

_SAVED = pytest.StashKey[tuple[str | None, int | None]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    register_option(
        parser,
        "seed",
        type=seed_value,
        ini_type="int",
        default=None,
        default_text="a new random seed each run, printed in the header",
        help="run seed for every random choice of multiconn faults (chunk sizes, pauses, "
        "which connection gets a fault); printed in the header and in failing reports, "
        "so a failure replays with the same seed",
    )
    register_option(
        parser,
        "target",
        default=None,
        default_text="not set",
        help="HOST:PORT of an echo server for the fault-injection suite "
        "(pytest --pyargs pytest_multiconn.suite --multiconn-target HOST:PORT)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Saved so an in-process pytester run restores the outer run's seed when it ends.
    seed = get_option(config, "seed")
    outer = swap_run_seed(seed)  # None: the next get_run_seed() reads the env or makes one
    config.stash[_SAVED] = (os.environ.get(SEED_ENV), outer)
    if seed is None:
        seed = get_run_seed()
    # xdist workers (and any subprocess) inherit the environment: same seed everywhere.
    os.environ[SEED_ENV] = str(seed)


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = config.stash.get(_SAVED, None)
    if saved is None:
        return
    env, run_seed = saved
    if env is None:
        os.environ.pop(SEED_ENV, None)
    else:
        os.environ[SEED_ENV] = env
    swap_run_seed(run_seed)


def pytest_report_header(config: pytest.Config) -> str:
    seed = get_run_seed()
    return f"multiconn: run seed {seed} (replay with --multiconn-seed {seed})"


@pytest.fixture
def multiconn_fault(request: pytest.FixtureRequest) -> ClientFault:
    """Each client fault of the catalogue in turn (PartialSend, SlowReader, NeverRead,
    NeverClose, Silent, HalfClose, ClientReset, Garbage, Burst, ConnectClose); the test ids
    are the fault names, so -k half_close picks one.  With
    @pytest.mark.multiconn_exchange(ex) only the faults that exchange supports run (the
    others are deselected): every fault runs with every exchange, except Garbage with an
    exchange that does not say what a server may answer to garbage (Lines, say).
    Function scope; yields a pytest_multiconn.faults.ClientFault to pass as
    faults=[multiconn_fault]; no teardown (the clients that use it clean up).
    """
    fault: ClientFault = request.param
    return fault


# The catalogue is given to the fixture here rather than with ``@pytest.fixture(params=...)``,
# which would need it (and so the faults, servers and TLS) when pytest imports the plugin:
# it is loaded when the first test that uses ``multiconn_fault`` is collected (issue 25).
# Setting the fixture definition's params before pytest's own hook reads them keeps what
# pytest does with a parametrized fixture (ids, their order, overrides), to the letter.
@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "multiconn_fault" not in metafunc.fixturenames:
        return
    ours = _fixture_function(multiconn_fault)
    for fixturedef in metafunc._arg2fixturedefs.get("multiconn_fault", ()):
        if fixturedef.params is None and _fixture_function(fixturedef.func) is ours:
            from pytest_multiconn.faults.client import catalogue

            faults = tuple(catalogue())
            # Final in pytest's annotations; read by its own pytest_generate_tests, after us.
            setattr(fixturedef, "params", faults)  # noqa: B010
            setattr(fixturedef, "ids", tuple(f.name for f in faults))  # noqa: B010


def _fixture_function(obj: Any) -> Any:
    """The function under a fixture definition (pytest 8.4+ wraps it)."""
    unwrap = getattr(obj, "_get_wrapped_function", None)
    return unwrap() if unwrap is not None else getattr(obj, "__wrapped__", obj)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # ``@pytest.mark.multiconn_exchange(Lines())``: multiconn_fault runs only the faults that
    # exchange supports (Garbage needs an exchange that says what a server answers to it).
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        fault = callspec.params.get("multiconn_fault") if callspec is not None else None
        marker = item.get_closest_marker("multiconn_exchange") if fault is not None else None
        if fault is None or marker is None or not marker.args:
            kept.append(item)
            continue
        # Only here: a run without multiconn_fault never imports the client (issue 25).
        from pytest_multiconn.client.multiconn import unsupported_fault

        if unsupported_fault(marker.args[0], fault):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class FaultyClients:
    """Runs faulty clients for one test and closes every one of them at teardown (implements
    :class:`~pytest_multiconn.fixtures.FaultyClientFactory`)."""

    def __init__(self, timeout: float, seeds: Iterator[int]) -> None:
        self.timeout = timeout
        self.seeds = seeds
        self.clients: list[MultiConnClient] = []

    def __repr__(self) -> str:
        return f"<FaultyClients clients={len(self.clients)}>"

    def __call__(
        self,
        address: Address,
        num_connections: int = 2,
        messages: Iterable[bytes] = DEFAULT_MESSAGES,
        *,
        faults: Iterable[ClientFault] = (),
        **kwargs: Any,
    ) -> FaultyClient:
        from pytest_multiconn.client.multiconn import MultiConnClient

        kwargs.setdefault("timeout", self.timeout)
        if kwargs.get("seed") is None:
            kwargs["seed"] = next(self.seeds)
        kwargs.setdefault("keep_open", True)
        client = MultiConnClient(address, num_connections, messages, faults=faults, **kwargs)
        self.clients.append(client)
        client.run()
        # It ran: .results is set (the type says so; the object is the MultiConnClient).
        return cast("FaultyClient", client)

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def multiconn_faulty_client_factory(
    request: pytest.FixtureRequest, multiconn_timeout: float
) -> Iterator[FaultyClientFactory]:
    """A factory (type pytest_multiconn.fixtures.FaultyClientFactory):
    multiconn_faulty_client_factory(address, num_connections=2, messages=DEFAULT_MESSAGES,
    faults=[...], **kwargs) runs a MultiConnClient with those faults and returns it after its
    exchanges (.results; lingering connections stay open: .lingering,
    .wait_closed_by_peer()).
    Function scope.  Unless seed= is given, the k-th client of a test is seeded from the run
    seed, the test's node id and k (a rerun with --multiconn-seed N replays it); runs and
    .wait_closed_by_peer() are bounded by --multiconn-timeout unless timeout= is given.
    Teardown closes every connection it opened, the never-closing ones included, so nothing
    leaks or hangs.
    """
    factory = FaultyClients(multiconn_timeout, fixture_seeds(request.node, "faulty-client"))
    try:
        yield factory
    finally:
        factory.close()
