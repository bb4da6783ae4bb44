"""TLS core: certificates, echo over TLS, mutual TLS, close_notify, fixtures, CLI + openssl."""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from helpers import connect, recv_exactly
from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.tls import TLSConfig, TLSLayer, make_tls_pair, write_ca_cert
from pytest_multiconn.tls.certs import _load_cert_chain
from pytest_multiconn.tls.stream import HANDSHAKE_TIMEOUT_REASON


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _blocking_tls(
    server: EchoServer, ctx: ssl.SSLContext, hostname: str = "127.0.0.1"
) -> ssl.SSLSocket:
    raw = connect(server.address)
    try:
        return ctx.wrap_socket(raw, server_hostname=hostname, suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


# -- certificates ---------------------------------------------------------------------------------


class _SpyContext(ssl.SSLContext):
    seen: list[tuple[int, int, str]]

    def load_cert_chain(self, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
        mode = stat.S_IMODE(os.stat(certfile).st_mode)
        dir_mode = stat.S_IMODE(os.stat(os.path.dirname(certfile)).st_mode)
        self.seen.append((mode, dir_mode, str(certfile)))
        super().load_cert_chain(certfile, keyfile, password)


def test_private_key_is_written_0600_in_a_private_dir_and_removed(multiconn_ca: trustme.CA) -> None:
    ctx = _SpyContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.seen = []
    _load_cert_chain(ctx, multiconn_ca.issue_cert("localhost"))
    [(mode, dir_mode, path)] = ctx.seen
    assert mode == 0o600
    assert dir_mode == 0o700
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))


def test_write_ca_cert_writes_only_the_public_certificate(tmp_path: Path) -> None:
    config = TLSConfig()
    path = write_ca_cert(config.ca, tmp_path)
    text = path.read_text()
    assert path.parent == tmp_path
    assert "BEGIN CERTIFICATE" in text
    assert "PRIVATE KEY" not in text
    assert path.read_bytes() == config.ca_pem


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_certificate_covers_each_loopback_name(
    host: str, multiconn_tls: TLSConfig, multiconn_server_factory: Callable[..., EchoServer]
) -> None:
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    bind = "127.0.0.1" if host == "localhost" else host
    server = multiconn_server_factory(host=bind, tls=multiconn_tls)
    results = MultiConnClient(
        server.address, 2, tls=server.client_tls, server_hostname=host, timeout=5
    ).run()
    results.check()
    assert server.stats().tls_handshakes == 2


def test_certificate_does_not_cover_other_names(
    multiconn_tls_server: EchoServer,
) -> None:
    results = MultiConnClient(
        multiconn_tls_server.address,
        1,
        tls=multiconn_tls_server.client_tls,
        server_hostname="example.com",
        timeout=5,
    ).run()
    assert not results.ok
    assert "Hostname mismatch" in (results[0].error or "")


def test_make_tls_pair_contexts_talk_to_each_other(
    multiconn_server_factory: Callable[..., EchoServer],
) -> None:
    server_ctx, client_ctx = make_tls_pair()
    server = multiconn_server_factory(tls=server_ctx)
    assert server.client_tls is None  # a bare SSLContext does not know its clients
    MultiConnClient(server.address, 3, tls=client_ctx, timeout=5).run().check()


def test_bad_tls_values_get_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"tls must be True, a TLSConfig or an ssl\.SSLContext"):
        EchoServer(tls="yes")
    with pytest.raises(ValueError, match="client SSLContext"):
        EchoServer(tls=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    with pytest.raises(TypeError, match=r"server\.client_tls"):
        MultiConnClient(("127.0.0.1", 1), tls=True)
    with pytest.raises(ValueError, match="handshake_timeout"):
        TLSConfig(handshake_timeout=0)


# -- echo over TLS --------------------------------------------------------------------------------


def test_echo_over_tls_many_connections_and_big_payload(multiconn_tls_server: EchoServer) -> None:
    payload = os.urandom(1 << 20)
    results = MultiConnClient(
        multiconn_tls_server.address, 8, [payload], tls=multiconn_tls_server.client_tls, timeout=20
    ).run()
    results.check()
    assert all(r.received == len(payload) for r in results)
    stats = multiconn_tls_server.wait_for_closed(8)
    assert stats.tls_handshakes == 8
    assert stats.tls_failures == 0
    assert stats.tls_ragged_eofs == 0
    assert stats.bytes_in == 8 * len(payload)


def test_tls_server_is_one_word(multiconn_server_factory: Callable[..., EchoServer]) -> None:
    server = multiconn_server_factory(tls=True)
    assert server.client_tls is not None
    MultiConnClient(server.address, 2, tls=server.client_tls, timeout=5).run().check()


def test_the_old_tls_mixin_names_are_gone() -> None:
    import pytest_multiconn.tls as tls_namespace

    for old in ("TLSConnectionMixin", "tls_connection_class", "NoSuchName"):
        with pytest.raises(AttributeError, match=old):
            getattr(tls_namespace, old)


def test_server_sends_close_notify_when_it_closes(
    multiconn_server_factory: Callable[..., EchoServer], multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls, idle_timeout=0.2)
    with _blocking_tls(server, multiconn_tls.client_context) as s:
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        # The idle timeout closes us; a clean close_notify reads as b"", a bare FIN would
        # raise SSLEOFError (suppress_ragged_eofs=False).
        assert s.recv(100) == b""
    server.wait_for_closed(1)
    [info] = server.recently_closed()
    assert info.close_reason == "idle timeout"
    assert "close_notify sent" in info.transcript


def test_client_close_notify_is_a_clean_eof_for_the_server(
    multiconn_tls_server: EchoServer,
) -> None:
    with _blocking_tls(multiconn_tls_server, multiconn_tls_server.client_tls) as s:  # type: ignore[arg-type]
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        raw = s.unwrap()  # sends close_notify, waits for the server's
        raw.close()
    stats = multiconn_tls_server.wait_for_closed(1)
    assert stats.tls_ragged_eofs == 0
    assert stats.tls_failures == 0


# -- mutual TLS -----------------------------------------------------------------------------------


def test_mutual_tls_server_sees_the_client_certificate(
    multiconn_server_factory: Callable[..., EchoServer], multiconn_tls: TLSConfig
) -> None:
    mutual = multiconn_tls.replace(require_client_cert=True)
    seen: list[Any] = []

    def observe(event: str, conn: Any, data: bytes | None) -> None:
        if event == "data" and not seen:
            assert isinstance(conn.layer, TLSLayer)
            seen.append(conn.layer.peer_certificate())

    server = multiconn_server_factory(tls=mutual, on_event=observe)
    MultiConnClient(server.address, 2, tls=server.client_tls, timeout=5).run().check()
    assert seen
    assert seen[0] is not None
    assert ("DNS", "multiconn-client") in seen[0]["subjectAltName"]
    assert server.stats().tls_handshakes == 2


# -- fixtures -------------------------------------------------------------------------------------


def test_any_server_fixture_runs_plain_and_tls(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_echo(multiconn_any_server, multiconn_client, request):
            server = multiconn_any_server
            mode = request.node.callspec.id
            assert (server.client_tls is not None) == (mode == "tls")
            multiconn_client(server.address, 3, tls=server.client_tls).check()
            stats = server.wait_for_closed(3)
            assert stats.tls_handshakes == (3 if mode == "tls" else 0)
        """
    )
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_echo?plain? PASSED*", "*test_echo?tls? PASSED*"])


def test_tls_server_fixture_takes_marker_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.multiconn_server(max_connections=1)
        def test_it(multiconn_tls_server, multiconn_client, multiconn_ca):
            assert multiconn_tls_server.max_connections == 1
            assert multiconn_tls_server.tls.config.ca is multiconn_ca
            multiconn_client(multiconn_tls_server.address, 1,
                             tls=multiconn_tls_server.client_tls).check()
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- a TLS client we did not write ----------------------------------------------------------------


def _read_line(stream: Any, deadline: float, what: str) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        buf = b""
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise AssertionError(f"timed out waiting for {what}; got {buf!r}")
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"EOF while waiting for {what}; got {buf!r}")
            buf += chunk
    return buf.decode()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
@pytest.mark.parametrize("verify", ["good", "wrong-ca"])
def test_openssl_s_client_echoes_against_cli_server_tls(verify: str, tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "pytest_multiconn", "server", "127.0.0.1", "0", "--tls"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        first = _read_line(server.stdout, deadline, "the CA line")
        assert first.startswith("TLS CA certificate: "), first
        cafile = first.split(": ", 1)[1].strip()
        assert "PRIVATE KEY" not in Path(cafile).read_text()
        listening = _read_line(server.stdout, deadline, "the Listening line")
        port = int(listening.rsplit(",", 1)[1].strip(" )\n"))
        if verify == "wrong-ca":
            cafile = str(write_ca_cert(trustme.CA(), tmp_path))
        client = subprocess.Popen(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                cafile,
                "-verify_return_error",
                "-verify_ip",
                "127.0.0.1",
                "-quiet",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert client.stdin is not None
            client.stdin.write(b"hello from openssl\n")
            client.stdin.flush()
            if verify == "good":
                line = _read_line(client.stdout, deadline, "the echo from our server")
                assert line == "hello from openssl\n"
            else:
                assert client.wait(20) != 0
                assert client.stderr is not None
                assert b"verify error" in client.stderr.read()
        finally:
            _stop(client)
    finally:
        _stop(server)
    assert not os.path.exists(cafile) or verify == "wrong-ca"


def test_cli_client_tls_needs_cafile(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_multiconn.cli import main

    assert main(["client", "127.0.0.1", "1", "1", "--tls"]) == 2
    assert "--tls needs --cafile" in capsys.readouterr().err


def test_cli_client_tls_talks_to_a_tls_server(
    multiconn_tls_server: EchoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_multiconn.cli import main

    assert multiconn_tls_server.tls is not None
    assert multiconn_tls_server.tls.config is not None
    cafile = multiconn_tls_server.tls.config.write_ca_cert(tmp_path)
    code = main(
        [
            "client",
            "127.0.0.1",
            str(multiconn_tls_server.port),
            "2",
            "--tls",
            "--cafile",
            str(cafile),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert multiconn_tls_server.wait_for_closed(2).tls_handshakes == 2


def test_handshake_timeout_reason_is_public() -> None:
    assert HANDSHAKE_TIMEOUT_REASON == "TLS handshake timeout"
