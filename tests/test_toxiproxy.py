"""The drop-in toxiproxy server, driven by toxiproxy-python and by plain HTTP.

Every toxic is measured on the wire, through the proxy to an EchoServer: lower bounds only
for time (a loaded machine is slow, never fast), exact byte counts for data.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import WAIT, connect, recv_exactly, recv_until_eof
from pytest_multiconn import EchoServer
from pytest_multiconn.cli import main
from pytest_multiconn.errors import ToxiproxyConfigError, ToxiproxyError
from pytest_multiconn.lowlevel import wait_until
from pytest_multiconn.toxiproxy import ToxiproxyServer

toxiproxy = pytest.importorskip("toxiproxy")
from toxiproxy.api import APIConsumer  # noqa: E402 - after the importorskip guard
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists  # noqa: E402


# -- plain HTTP ----------------------------------------------------------------------------
def call(
    server: ToxiproxyServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, http.client.HTTPResponse]:
    """One request on a fresh connection: ``(status, parsed JSON or None, response)``."""
    conn = http.client.HTTPConnection(*server.address[:2], timeout=WAIT)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    return response.status, json.loads(payload) if payload else None, response


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def upstream_of(server: EchoServer) -> str:
    return f"{server.host}:{server.port}"


# -- one interface, two clients ---------------------------------------------------------------
class PythonClient:
    """toxiproxy-python, the real client from PyPI."""

    name = "toxiproxy-python"

    def __init__(self, server: ToxiproxyServer) -> None:
        self.tp = toxiproxy.Toxiproxy()
        self.tp.update_api_consumer(*server.address[:2])

    def create(self, name: str, upstream: str) -> tuple[str, int]:
        return hostport(self.tp.create(upstream=upstream, name=name).listen)

    def add_toxic(self, proxy: str, **toxic: Any) -> None:
        self.tp.get_proxy(proxy).add_toxic(**toxic)

    def remove_toxic(self, proxy: str, name: str) -> None:
        assert self.tp.get_proxy(proxy).destroy_toxic(name)

    def toxic_names(self, proxy: str) -> list[str]:
        return sorted(self.tp.get_proxy(proxy).toxics())

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        p = self.tp.get_proxy(proxy)
        p.enable() if enabled else p.disable()
        assert self.tp.get_proxy(proxy).enabled is enabled

    def populate(self, proxies: list[dict[str, Any]]) -> list[str]:
        return [p.name for p in self.tp.populate(proxies)]

    def listen(self, proxy: str) -> tuple[str, int]:
        return hostport(self.tp.get_proxy(proxy).listen)

    def reset(self) -> None:
        assert self.tp.reset()


class PlainHTTP:
    """http.client and toxiproxy's documented JSON, nothing else."""

    name = "http.client"

    def __init__(self, server: ToxiproxyServer) -> None:
        self.server = server

    def _ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, value, _ = call(self.server, method, path, body)
        assert got == status, (method, path, got, value)
        return value

    def create(self, name: str, upstream: str) -> tuple[str, int]:
        value = self._ok("POST", "/proxies", {"name": name, "upstream": upstream,
                                              "listen": "127.0.0.1:0"}, 201)
        return hostport(value["listen"])

    def add_toxic(self, proxy: str, **toxic: Any) -> None:
        self._ok("POST", f"/proxies/{proxy}/toxics", toxic)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._ok("DELETE", f"/proxies/{proxy}/toxics/{name}", status=204)

    def toxic_names(self, proxy: str) -> list[str]:
        return sorted(t["name"] for t in self._ok("GET", f"/proxies/{proxy}/toxics"))

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        assert self._ok("POST", f"/proxies/{proxy}", {"enabled": enabled})["enabled"] is enabled

    def populate(self, proxies: list[dict[str, Any]]) -> list[str]:
        return [p["name"] for p in self._ok("POST", "/populate", proxies, 201)["proxies"]]

    def listen(self, proxy: str) -> tuple[str, int]:
        return hostport(self._ok("GET", f"/proxies/{proxy}")["listen"])

    def reset(self) -> None:
        self._ok("POST", "/reset", status=204)


@pytest.fixture
def restore_api_consumer() -> Iterator[None]:
    # toxiproxy-python keeps the server's address in class attributes.
    saved = APIConsumer.host, APIConsumer.port
    try:
        yield
    finally:
        APIConsumer.host, APIConsumer.port = saved


@pytest.fixture(params=[PythonClient, PlainHTTP], ids=["toxiproxy-python", "http.client"])
def client(
    request: pytest.FixtureRequest, multiconn_toxiproxy: ToxiproxyServer,
    restore_api_consumer: None,
) -> PythonClient | PlainHTTP:
    return request.param(multiconn_toxiproxy)  # type: ignore[no-any-return]


def echo_once(address: tuple[str, int], payload: bytes = b"ping") -> float:
    """Send ``payload`` through the proxy, read the echo; returns the round trip in seconds."""
    with connect(address) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        return time.monotonic() - start


# -- proxies and toxics, measured on the wire --------------------------------------------------
def test_create_a_proxy_and_echo_through_it(client, multiconn_server: EchoServer):
    address = client.create("echo", upstream_of(multiconn_server))
    assert address[1] != 0  # "listen" reports the bound port, not the 0 asked for
    assert client.listen("echo") == address
    echo_once(address, b"through the toxiproxy API")
    assert multiconn_server.stats().bytes_in >= len(b"through the toxiproxy API")


def test_latency_delays_the_round_trip_and_removing_it_stops_the_delay(
    client, multiconn_server: EchoServer
):
    address = client.create("echo", upstream_of(multiconn_server))
    client.add_toxic("echo", type="latency", stream="downstream",
                     attributes={"latency": 200, "jitter": 0})
    assert client.toxic_names("echo") == ["latency_downstream"]
    assert echo_once(address) >= 0.2
    client.remove_toxic("echo", "latency_downstream")
    assert client.toxic_names("echo") == []
    echo_once(address)


def test_bandwidth_paces_the_transfer(client, multiconn_server: EchoServer):
    address = client.create("echo", upstream_of(multiconn_server))
    rate_kb = 100  # toxiproxy's unit: KB/s, 1 KB = 1000 bytes
    client.add_toxic("echo", type="bandwidth", attributes={"rate": rate_kb})
    size = 40_000
    elapsed = echo_once(address, os.urandom(size))
    # Lower bound only: K bytes at R KB/s take K / (1000 R) seconds; the toxic may send its
    # first slices (20 ms of data) at once, hence the 50 ms allowance.
    assert elapsed >= size / (rate_kb * 1000) - 0.05
    client.remove_toxic("echo", "bandwidth_downstream")


def test_timeout_drops_data_then_closes_after_the_timeout(client, multiconn_server: EchoServer):
    address = client.create("echo", upstream_of(multiconn_server))
    client.add_toxic("echo", type="timeout", attributes={"timeout": 200})
    start = time.monotonic()  # before connect: the proxy's clock starts at its accept
    with connect(address) as sock:
        sock.sendall(b"never answered")
        assert recv_until_eof(sock) == b""  # nothing delivered, then end-of-stream
        assert time.monotonic() - start >= 0.2
    client.remove_toxic("echo", "timeout_downstream")
    echo_once(address)


def test_reset_peer_resets_the_connection_after_its_timeout(
    client, multiconn_server: EchoServer
):
    address = client.create("echo", upstream_of(multiconn_server))
    client.add_toxic("echo", type="reset_peer", attributes={"timeout": 150})
    start = time.monotonic()  # before connect: the proxy's clock starts at its accept
    with connect(address) as sock:
        sock.sendall(b"x")  # the proxy reads it; the reset comes at 150 ms
        with pytest.raises(ConnectionResetError):
            recv_until_eof(sock)
        assert time.monotonic() - start >= 0.15
    client.remove_toxic("echo", "reset_peer_downstream")
    echo_once(address)


def test_slicer_cuts_the_reply_into_delayed_pieces(client, multiconn_server: EchoServer):
    address = client.create("echo", upstream_of(multiconn_server))
    # average 4 +/- 2 bytes, 30 ms (30000 microseconds, toxiproxy's unit) apart
    client.add_toxic("echo", type="slicer",
                     attributes={"average_size": 4, "size_variation": 2, "delay": 30_000})
    payload = bytes(range(24))
    with connect(address) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        chunks = []
        while sum(map(len, chunks)) < len(payload):
            chunk = sock.recv(1024)
            assert chunk, f"EOF after {chunks}"
            chunks.append(chunk)
        elapsed = time.monotonic() - start
    assert b"".join(chunks) == payload
    # At most 6 bytes a piece: at least 4 pieces, so at least 3 gaps of 30 ms.
    assert elapsed >= 3 * 0.03
    assert len(chunks) >= 2


def test_limit_data_closes_after_exactly_n_bytes(client, multiconn_server: EchoServer):
    address = client.create("echo", upstream_of(multiconn_server))
    client.add_toxic("echo", type="limit_data", attributes={"bytes": 10})
    payload = bytes(range(100))
    with connect(address) as sock:
        sock.sendall(payload)
        assert recv_until_eof(sock) == payload[:10]


def test_disable_refuses_connections_and_enable_serves_again(
    client, multiconn_server: EchoServer
):
    address = client.create("echo", upstream_of(multiconn_server))
    live = connect(address)
    try:
        live.sendall(b"a")
        assert recv_exactly(live, 1) == b"a"
        client.set_enabled("echo", False)
        # Disabling cuts the connections that were open...
        assert recv_until_eof(live) == b""
    finally:
        live.close()
    # ...and refuses new ones.
    with pytest.raises(ConnectionRefusedError):
        connect(address).close()
    client.set_enabled("echo", True)
    assert client.listen("echo") == address  # back on the same port
    echo_once(address)


def test_populate_creates_proxies_and_reset_clears_toxics_and_enables(
    client, multiconn_server: EchoServer
):
    upstream = upstream_of(multiconn_server)
    names = client.populate([
        {"name": "one", "listen": "127.0.0.1:0", "upstream": upstream},
        {"name": "two", "listen": "127.0.0.1:0", "upstream": upstream},
    ])
    assert sorted(names) == ["one", "two"]
    one, two = client.listen("one"), client.listen("two")
    echo_once(one)
    echo_once(two)
    client.add_toxic("one", type="timeout", attributes={"timeout": 0})
    client.set_enabled("two", False)
    with pytest.raises(ConnectionRefusedError):
        connect(two).close()
    client.reset()
    assert client.toxic_names("one") == []
    echo_once(one)  # the timeout toxic (drop everything) is gone
    echo_once(two)  # and the disabled proxy listens again


def test_toxicity_zero_never_applies(client, multiconn_server: EchoServer):
    address = client.create("echo", upstream_of(multiconn_server))
    client.add_toxic("echo", type="limit_data", toxicity=0.0, attributes={"bytes": 0})
    for _ in range(3):
        echo_once(address)


# -- the seed ------------------------------------------------------------------------------
def slicer_boundaries(api_url: tuple[str, int], echo: EchoServer) -> list[int]:
    """Chunk sizes of one reply through a slicer (30 ms apart, so every piece arrives on its
    own); a run whose reader fell behind (two pieces in one read) is redone."""
    server_addr = api_url
    gap = 0.03
    for _attempt in range(5):
        conn = http.client.HTTPConnection(*server_addr, timeout=WAIT)
        try:
            conn.request("DELETE", "/proxies/sliced")
            conn.getresponse().read()
            conn.request("POST", "/proxies", body=json.dumps(
                {"name": "sliced", "listen": "127.0.0.1:0", "upstream": upstream_of(echo)}))
            listen = json.loads(conn.getresponse().read())["listen"]
            conn.request("POST", "/proxies/sliced/toxics", body=json.dumps(
                {"type": "slicer", "attributes": {"average_size": 5, "size_variation": 3,
                                                  "delay": int(gap * 1e6)}}))
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        payload = os.urandom(40)
        sizes: list[int] = []
        late = False
        with connect(hostport(listen)) as sock:
            sock.sendall(payload)
            last = None
            while sum(sizes) < len(payload):
                chunk = sock.recv(1024)
                assert chunk, f"EOF after {sizes}"
                now = time.monotonic()
                if last is not None and now - last > 1.5 * gap:
                    late = True  # this read may hold two pieces
                last = now
                sizes.append(len(chunk))
        if not late:
            return sizes
    pytest.fail("the reader fell behind the slicer in 5 runs; the machine is too loaded")


def test_same_seed_same_slicer_boundaries_in_process(multiconn_server: EchoServer):
    def run(seed: int) -> list[int]:
        with ToxiproxyServer(seed=seed) as server:
            return slicer_boundaries(server.address[:2], multiconn_server)

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert len(first) > 1
    assert other != first  # 40 bytes in pieces of 2..8: a different seed cuts differently


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``multiconn toxiproxy-server --port 0 ARGS`` in a child; returns it and its API URL."""
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest_multiconn", "toxiproxy-server", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # bounded: the child prints it at once or exits
    if "toxiproxy API on http://" not in line:
        child.kill()
        _, err = child.communicate(timeout=WAIT)
        pytest.fail(f"toxiproxy-server did not start: {line!r} {err!r}")
    return child, line.split("toxiproxy API on http://", 1)[1].split()[0]


def stop_cli(child: subprocess.Popen[str]) -> str:
    child.send_signal(signal.SIGINT)
    try:
        out, _ = child.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("toxiproxy-server did not stop on SIGINT")
    assert child.returncode == 0
    return out


def test_cli_same_seed_same_slicer_boundaries(multiconn_server: EchoServer):
    runs = []
    for _ in range(2):
        child, url = start_cli("--seed", "1234", "--quiet")
        try:
            runs.append(slicer_boundaries(hostport(url), multiconn_server))
        finally:
            stop_cli(child)
    assert runs[0] == runs[1]
    assert len(runs[0]) > 1


def test_cli_loads_a_config_and_logs_requests(tmp_path: Path, multiconn_server: EchoServer):
    config = tmp_path / "toxiproxy.json"
    config.write_text(json.dumps([
        {"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream_of(multiconn_server)},
        {"name": "off", "listen": "127.0.0.1:0", "upstream": upstream_of(multiconn_server),
         "enabled": False},
    ]))
    child, url = start_cli("--config", str(config), "--seed", "3")
    try:
        conn = http.client.HTTPConnection(*hostport(url), timeout=WAIT)
        try:
            conn.request("GET", "/proxies")
            proxies = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        assert sorted(proxies) == ["echo", "off"]
        assert proxies["off"]["enabled"] is False
        echo_once(hostport(proxies["echo"]["listen"]))
    finally:
        out = stop_cli(child)
    assert "GET /proxies 200" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--seed", "x"], "a seed is a non-negative integer"),
        (["--port", "70000"], "port must be an integer from 0 to 65535"),
        (["--config", "/nonexistent/toxiproxy.json"], "cannot read toxiproxy config"),
        (["--host", "192.0.2.1"], "not a loopback address"),
    ],
)
def test_cli_usage_errors_are_one_line_and_exit_2(capsys, args, expected):
    assert main(["toxiproxy-server", "--port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1
    assert err.startswith("multiconn: error:")


def test_missing_h11_names_the_extra():
    code = (
        "import sys; sys.modules['h11'] = None\n"
        "from pytest_multiconn.cli import main\n"
        "status = main(['toxiproxy-server', '--port', '0'])\n"
        "try:\n"
        "    import pytest_multiconn.toxiproxy\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "pytest-multiconn[toxiproxy]" in result.stderr
    assert "pytest-multiconn[toxiproxy]" in result.stdout


# -- status codes and JSON shapes ------------------------------------------------------------
def make_proxy(server: ToxiproxyServer, echo: EchoServer, name: str = "echo") -> dict[str, Any]:
    status, value, _ = call(server, "POST", "/proxies",
                            {"name": name, "listen": "127.0.0.1:0", "upstream": upstream_of(echo)})
    assert status == 201
    return value  # type: ignore[no-any-return]


def test_json_shapes_of_proxies_and_toxics(multiconn_toxiproxy, multiconn_server):
    server = multiconn_toxiproxy
    created = make_proxy(server, multiconn_server)
    assert list(created) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert created["enabled"] is True
    assert created["toxics"] == []
    status, toxic, response = call(server, "POST", "/proxies/echo/toxics", {
        "type": "latency", "stream": "upstream", "attributes": {"latency": 5}})
    assert status == 200  # toxiproxy answers a new toxic with 200, not 201
    assert response.getheader("Content-Type") == "application/json"
    assert toxic == {"attributes": {"latency": 5, "jitter": 0}, "name": "latency_upstream",
                     "type": "latency", "stream": "upstream", "toxicity": 1.0}
    call(server, "POST", "/proxies/echo/toxics", {"type": "slicer", "name": "s",
                                                  "attributes": {"average_size": 3}})
    call(server, "POST", "/proxies/echo/toxics", {"type": "timeout", "stream": "upstream"})
    # Upstream toxics first, then downstream ones, each in the order added (as toxiproxy).
    status, listed, _ = call(server, "GET", "/proxies/echo/toxics")
    assert [t["name"] for t in listed] == ["latency_upstream", "timeout_upstream", "s"]
    status, index, _ = call(server, "GET", "/proxies")
    assert index == {"echo": {**created, "toxics": listed}}
    assert call(server, "GET", "/proxies/echo")[1] == index["echo"]
    assert call(server, "GET", "/proxies/echo/toxics/s")[1]["attributes"] == {
        "average_size": 3, "size_variation": 0, "delay": 0}
    # An update changes the attributes it names and keeps the others.
    status, updated, _ = call(server, "POST", "/proxies/echo/toxics/latency_upstream",
                              {"attributes": {"jitter": 2}, "toxicity": 0.5})
    assert status == 200
    assert updated["attributes"] == {"latency": 5, "jitter": 2}
    assert updated["toxicity"] == 0.5
    status, value, _ = call(server, "PATCH", "/proxies/echo/toxics/s",
                            {"attributes": {"size_variation": 1}})
    assert (status, value["attributes"]["size_variation"]) == (200, 1)
    status, value, response = call(server, "DELETE", "/proxies/echo/toxics/s")
    assert (status, value, response.getheader("Content-Length")) == (204, None, None)
    assert call(server, "DELETE", "/proxies/echo")[0] == 204
    assert call(server, "GET", "/proxies")[1] == {}
    assert call(server, "GET", "/version")[1] == {"version": server.router.version}


ERROR_CASES = [
    ("GET", "/proxies/nope", None, 404, "proxy not found"),
    ("DELETE", "/proxies/nope", None, 404, "proxy not found"),
    ("GET", "/proxies/nope/toxics", None, 404, "proxy not found"),
    ("GET", "/proxies/echo/toxics/nope", None, 404, "toxic not found"),
    ("DELETE", "/proxies/echo/toxics/nope", None, 404, "toxic not found"),
    ("POST", "/proxies/echo/toxics/nope", {"attributes": {}}, 404, "toxic not found"),
    ("POST", "/proxies", {"name": "echo", "upstream": "127.0.0.1:1"}, 409,
     "proxy already exists"),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "name": "lat"}, 409,
     "toxic already exists"),
    ("POST", "/proxies", {"upstream": "127.0.0.1:1"}, 400, "missing required field: name"),
    ("POST", "/proxies", {"name": "x"}, 400, "missing required field: upstream"),
    ("POST", "/proxies", b"{not json", 400, "bad request body"),
    ("POST", "/proxies", b"", 400, "bad request body: EOF"),
    ("POST", "/proxies", [1], 400, "bad request body"),
    ("POST", "/proxies", {"name": 5, "upstream": "127.0.0.1:1"}, 400, "bad request body"),
    ("POST", "/proxies", {"name": "x", "upstream": "127.0.0.1:1", "listen": "10.1.2.3:0"},
     400, "not a loopback address"),
    ("POST", "/proxies", {"name": "x", "upstream": "nocolon"}, 400, "expected HOST:PORT"),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "stream": "sideways"}, 400,
     "stream was invalid, can be either upstream or downstream"),
    ("POST", "/proxies/echo/toxics", {"type": "teleport"}, 400, "invalid toxic type"),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latenc": 1}}, 400,
     "latency has no attribute 'latenc'"),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latency": 1.5}},
     400, "must be an integer"),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latency": -1}},
     400, "latency attributes {'latency': -1, 'jitter': 0}: "),
    ("POST", "/proxies/echo/toxics", {"type": "slicer", "attributes": {"average_size": 0}},
     400, "slicer attributes {'average_size': 0, 'size_variation': 0, 'delay': 0}: "),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "toxicity": 2}, 400,
     "toxicity must be a number from 0 to 1"),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "toxicity": True}, 400,
     "toxicity must be a number from 0 to 1, got True"),
    ("POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latency": 2**63}},
     400, "must be an integer"),
    ("POST", "/proxies/echo/toxics/lat", {"attributes": {"jitter": "x"}}, 400,
     "must be an integer"),
    ("POST", "/proxies/echo", {"enabled": "yes"}, 400, "enabled must be true or false"),
    ("POST", "/populate", {"name": "x"}, 400, "expected a JSON array"),
    ("POST", "/populate", [{"name": "a", "upstream": "127.0.0.1:1"}, {"name": "b"}], 400,
     "missing required field: upstream at proxy 2"),
    ("GET", "/nowhere", None, 404, "404 page not found"),
    ("PUT", "/proxies", None, 405, "405 method not allowed"),
]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seed": "7"}, r"^seed must be an integer from 0 to 2\*\*64 - 1 or None .*got '7'"),
    ({"seed": True}, r"^seed must be .*got True"),
    ({"max_body": -1}, r"^max_body \(bytes\) must be an integer >= 0, got -1"),
    ({"max_body": 1.5}, r"^max_body \(bytes\) must be an integer >= 0, got 1.5"),
])
def test_server_arguments_are_checked_where_given(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ToxiproxyServer(**kwargs)


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), ERROR_CASES,
                         ids=[f"{c[0]} {c[1]} {c[3]}" for c in ERROR_CASES])
def test_error_status_and_shape(  # noqa: PLR0917 - fixtures plus one parametrized case
    multiconn_toxiproxy, multiconn_server, method, path, body, status, message
):
    server = multiconn_toxiproxy
    make_proxy(server, multiconn_server)
    assert call(server, "POST", "/proxies/echo/toxics", {"type": "latency", "name": "lat"})[0] \
        == 200
    raw = body if isinstance(body, bytes) else None
    got, value, response = call(server, method, path, None if raw is not None else body,
                                raw=raw)
    assert got == status, value
    assert value["status"] == status
    assert message in value["error"]
    if status == 405:
        assert response.getheader("Allow") == "GET, POST"
    if path == "/populate":
        assert value["proxies"] is None
    # A refused request changes nothing.
    assert sorted(call(server, "GET", "/proxies")[1]) == ["echo"]
    assert [t["name"] for t in call(server, "GET", "/proxies/echo/toxics")[1]] == ["lat"]


def test_toxiproxy_python_sees_the_error_codes(multiconn_toxiproxy, multiconn_server,
                                               restore_api_consumer):
    tp = toxiproxy.Toxiproxy()
    tp.update_api_consumer(*multiconn_toxiproxy.address[:2])
    proxy = tp.create(upstream=upstream_of(multiconn_server), name="echo")
    with pytest.raises(ProxyExists):
        tp.create(upstream=upstream_of(multiconn_server), name="echo")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="sideways")
    with pytest.raises(NotFound):
        proxy.destroy_toxic("nope")
    assert tp.version() == json.dumps(
        {"version": multiconn_toxiproxy.router.version}, separators=(",", ":")).encode()
    assert tp.running()
    tp.destroy_all()
    assert tp.proxies() == {}


def test_populate_keeps_unchanged_proxies_and_replaces_changed_ones(
    multiconn_toxiproxy, multiconn_server
):
    server = multiconn_toxiproxy
    first = make_proxy(server, multiconn_server)
    call(server, "POST", "/proxies/echo/toxics", {"type": "latency"})
    same = {"name": "echo", "listen": first["listen"], "upstream": first["upstream"]}
    status, value, _ = call(server, "POST", "/populate", [same])
    assert status == 201
    assert value["proxies"][0]["toxics"] != []  # untouched, toxics and all
    with EchoServer() as other:
        moved = {"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream_of(other)}
        status, value, _ = call(server, "POST", "/populate", [moved])
        assert status == 201
        (proxy,) = value["proxies"]
        assert proxy["upstream"] == upstream_of(other)
        assert proxy["toxics"] == []
        echo_once(hostport(proxy["listen"]))
        assert other.stats().bytes_in == 4


def test_changing_upstream_restarts_the_proxy_and_keeps_its_toxics(
    multiconn_toxiproxy, multiconn_server
):
    server = multiconn_toxiproxy
    created = make_proxy(server, multiconn_server)
    call(server, "POST", "/proxies/echo/toxics", {"type": "limit_data",
                                                  "attributes": {"bytes": 2}})
    with EchoServer() as other:
        status, value, _ = call(server, "POST", "/proxies/echo",
                                {"upstream": upstream_of(other)})
        assert status == 200
        assert value["listen"] == created["listen"]
        assert value["enabled"] is True
        with connect(hostport(value["listen"])) as sock:
            sock.sendall(b"hello")
            assert recv_until_eof(sock) == b"he"  # the toxic came along
        assert other.stats().bytes_in == 5


def test_http_keep_alive_and_pipelining(multiconn_toxiproxy):
    server = multiconn_toxiproxy
    conn = http.client.HTTPConnection(*server.address[:2], timeout=WAIT)
    try:
        for _ in range(3):  # one connection, three requests
            conn.request("GET", "/version")
            assert conn.getresponse().read()
    finally:
        conn.close()
    assert server.stats().accepted == 1
    with socket.create_connection(server.address[:2], timeout=WAIT) as sock:
        sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n" * 2
                     + b"GET /proxies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        replies = recv_until_eof(sock)
    assert replies.count(b"HTTP/1.1 200 ") == 3
    assert replies.endswith(b"{}")


def test_oversized_and_malformed_requests_are_refused(multiconn_toxiproxy):
    server = multiconn_toxiproxy
    server.max_body = 100
    status, value, response = call(server, "POST", "/populate", raw=b"[" + b" " * 200 + b"]")
    assert (status, value["status"]) == (413, 413)
    assert response.getheader("Connection") == "close"
    with socket.create_connection(server.address[:2], timeout=WAIT) as sock:
        # Headers that never end: h11 gives up past its bound (16 KiB) with a 431.
        sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        reply = recv_until_eof(sock)
    assert reply.startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(server.address[:2], timeout=WAIT) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert recv_until_eof(sock).startswith(b"HTTP/1.1 400 ")
    assert call(server, "GET", "/version")[0] == 200  # the server carries on


def test_browsers_are_refused_as_toxiproxy_does(multiconn_toxiproxy):
    status, value, _ = call(multiconn_toxiproxy, "GET", "/proxies",
                            headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert (status, value["error"]) == (403, "User agent not allowed")


def test_api_in_process_raises_toxiproxy_errors(multiconn_toxiproxy, multiconn_server):
    api = multiconn_toxiproxy.api
    api.create({"name": "echo", "upstream": upstream_of(multiconn_server)})
    with pytest.raises(ToxiproxyError, match="proxy already exists") as info:
        api.create({"name": "echo", "upstream": upstream_of(multiconn_server)})
    assert info.value.status == 409
    api.add_toxic("echo", {"type": "limit_data", "attributes": {"bytes": 1}})
    proxy = api.fault_proxy("echo")
    assert [t.name for t in proxy.faults()] == ["limit_data_downstream"]
    assert proxy.seed == api.proxy_seed("echo")
    report = multiconn_toxiproxy.report()
    assert "proxy 'echo'" in report
    assert "limit_data_downstream" in report


def test_config_file_is_checked_before_start(tmp_path: Path, multiconn_server):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x"}]))
    with pytest.raises(ToxiproxyConfigError, match=r"missing required field: upstream at proxy 1"):
        ToxiproxyServer(config=bad)
    bad.write_text("[{")
    with pytest.raises(ToxiproxyConfigError, match="is not JSON"):
        ToxiproxyServer(config=bad)
    bad.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ToxiproxyConfigError, match="nests JSON too deeply"):
        ToxiproxyServer(config=bad)
    good = [{"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream_of(multiconn_server)}]
    with ToxiproxyServer(config=good) as server:
        echo_once(hostport(server.api.show("echo")["listen"]))


def test_a_remote_api_host_needs_allow_remote():
    with pytest.raises(ValueError, match="not a loopback address"):
        ToxiproxyServer("192.0.2.1").start()


def test_slow_close_holds_the_end_of_stream(client, multiconn_server: EchoServer):
    address = client.create("echo", upstream_of(multiconn_server))
    client.add_toxic("echo", type="slow_close", attributes={"delay": 150})
    with connect(address) as sock:
        sock.sendall(b"bye")
        assert recv_exactly(sock, 3) == b"bye"
        start = time.monotonic()
        sock.shutdown(socket.SHUT_WR)  # the echo server answers with its EOF, held 150 ms
        assert recv_until_eof(sock) == b""
        assert time.monotonic() - start >= 0.15


def test_ipv6_listen_and_upstream(multiconn_toxiproxy, multiconn_server_factory):
    echo6 = multiconn_server_factory(host="::1")
    status, value, _ = call(multiconn_toxiproxy, "POST", "/proxies", {
        "name": "v6", "listen": "[::1]:0", "upstream": f"[::1]:{echo6.port}"})
    assert status == 201
    host, port = hostport(value["listen"])
    assert host == "[::1]"
    echo_once(("::1", port))


def test_expect_100_continue(multiconn_toxiproxy, multiconn_server):
    body = json.dumps({"name": "e", "upstream": upstream_of(multiconn_server)}).encode()
    with socket.create_connection(multiconn_toxiproxy.address[:2], timeout=WAIT) as sock:
        sock.sendall(b"POST /proxies HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_eof(sock).startswith(b"HTTP/1.1 201 ")


def test_fixture_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json, socket, urllib.request

        def post(url, body):
            request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.load(response)

        def test_proxy_through_the_fixture(multiconn_toxiproxy, multiconn_server):
            status, proxy = post(multiconn_toxiproxy.url + "/proxies", {
                "name": "echo", "upstream": "127.0.0.1:%d" % multiconn_server.port})
            assert status == 201
            port = int(proxy["listen"].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"hi")
                assert s.recv(2) == b"hi"

        def test_failure_report_names_the_proxies(multiconn_toxiproxy, multiconn_server):
            multiconn_toxiproxy.api.create({
                "name": "db", "upstream": "127.0.0.1:%d" % multiconn_server.port})
            multiconn_toxiproxy.api.add_toxic("db", {"type": "latency"})
            assert False
        """
    )
    result = pytester.runpytest("-W", "error", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    # Teardown stopped the proxies made over HTTP (no leak error), and a failing test's
    # report section lists them with their seed and toxics.
    result.stdout.fnmatch_lines(["*proxy 'db' 127.0.0.1:* -> 127.0.0.1:* enabled seed=*"
                                 " toxics: latency_downstream=*"])


def test_same_seed_same_toxicity_draws(multiconn_server: EchoServer):
    """Which connections get a toxic with toxicity 0.5 is a seeded draw: the same seed picks
    the same connections."""

    def pattern(seed: int) -> list[bool]:
        with ToxiproxyServer(seed=seed) as server:
            listen = server.api.create({"name": "p", "listen": "127.0.0.1:0",
                                        "upstream": upstream_of(multiconn_server)})["listen"]
            server.api.add_toxic("p", {"type": "limit_data", "toxicity": 0.5,
                                       "attributes": {"bytes": 1}})
            hit = []
            for _ in range(12):
                with connect(hostport(listen)) as sock:
                    sock.sendall(b"xy")
                    sock.shutdown(socket.SHUT_WR)
                    reply = recv_until_eof(sock)
                assert reply in (b"x", b"xy")
                hit.append(reply == b"x")
            return hit

    first = pattern(11)
    assert pattern(11) == first
    assert any(first)
    assert not all(first)


@pytest.mark.parametrize("path", ["/proxies", "/populate", "/proxies/x/toxics"])
def test_deeply_nested_json_is_a_400_and_no_loop_error(multiconn_toxiproxy, path):
    server = multiconn_toxiproxy
    depth = 100_000
    status, value, _ = call(server, "POST", path, raw=b"[" * depth + b"]" * depth)
    assert status == 400, value
    assert value["status"] == 400
    assert "nested more than 32 deep" in value["error"], value
    # Just too deep for our bound but shallow enough for json.loads: refused the same way.
    status, value, _ = call(server, "POST", path, raw=b"[" * 200 + b"]" * 200)
    assert status == 400, value
    assert "nested" in value["error"], value
    server.check()  # nothing was reported to the loop (it would re-raise at teardown)
    assert call(server, "GET", "/version")[0] == 200


def test_patching_latency_to_zero_passes_on_what_it_holds(multiconn_toxiproxy, multiconn_server):
    server = multiconn_toxiproxy
    address = hostport(make_proxy(server, multiconn_server)["listen"])
    status, _, _ = call(server, "POST", "/proxies/echo/toxics",
                        {"type": "latency", "name": "slow", "attributes": {"latency": 60_000}})
    assert status == 200
    proxy = server.api.fault_proxy("echo")
    with connect(address) as sock:
        handle = proxy.wait_for_connection()
        sock.sendall(b"held")
        # A bounded poll: the echo is now held.
        wait_until(lambda: handle.stats()["downstream"] >= 4, WAIT, "the proxy to read the echo")
        status, value, _ = call(server, "PATCH", "/proxies/echo/toxics/slow",
                                {"attributes": {"latency": 0}})
        assert (status, value["attributes"]["latency"]) == (200, 0)
        sock.settimeout(20.0)  # far below the 60 s the bytes were held for
        assert recv_exactly(sock, 4) == b"held"
