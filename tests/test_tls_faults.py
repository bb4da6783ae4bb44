"""TLS faults, each with its positive twin, and every client fault over TLS."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.faults import (
    CertFault,
    ExpiredCert,
    Fault,
    FaultParameterError,
    NoCloseNotify,
    StallHandshake,
    UntrustedCert,
    WrongHostCert,
)
from pytest_multiconn.faults.client import HalfClose, NeverRead, PartialSend, SlowReader
from pytest_multiconn.suite.checks import ContractBreak, check_echo_server
from pytest_multiconn.tls import TLSConfig
from pytest_multiconn.tls.stream import HANDSHAKE_TIMEOUT_REASON

Factory = Callable[..., EchoServer]


# -- a handshake that stalls ----------------------------------------------------------------------


@pytest.mark.parametrize("partial", [True, False], ids=["half-hello", "nothing"])
def test_stalled_handshake_is_dropped_after_the_timeout(
    partial: bool, multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(handshake_timeout=0.3))
    results = MultiConnClient(
        server.address,
        2,
        tls=server.client_tls,
        faults=[StallHandshake(partial=partial)],
        timeout=10,
    ).run()
    results.check()  # the fault's expectation: the server dropped us
    assert all("peer dropped the stalled TLS handshake" in r.note for r in results)
    stats = server.wait_for_closed(2)
    assert stats.tls_failures == 2
    assert stats.tls_handshakes == 0
    assert {c.close_reason for c in server.recently_closed()} == {HANDSHAKE_TIMEOUT_REASON}
    # The server is still serving.
    MultiConnClient(server.address, 1, tls=server.client_tls, timeout=5).run().check()


def test_handshake_that_completes_in_time_is_not_dropped(
    multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(handshake_timeout=0.3))
    MultiConnClient(server.address, 4, tls=server.client_tls, timeout=5).run().check()
    stats = server.wait_for_closed(4)
    assert stats.tls_failures == 0
    assert stats.tls_handshakes == 4


def test_stalled_handshake_fails_when_the_server_never_drops_it(
    multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(handshake_timeout=30))
    results = MultiConnClient(
        server.address, 1, tls=server.client_tls, faults=[StallHandshake()], timeout=0.5
    ).run()
    assert not results.ok
    assert "timed out" in (results[0].error or "")


# -- close without close_notify -------------------------------------------------------------------


def test_close_without_close_notify_is_counted(multiconn_tls_server: EchoServer) -> None:
    MultiConnClient(
        multiconn_tls_server.address,
        3,
        tls=multiconn_tls_server.client_tls,
        faults=[NoCloseNotify()],
        timeout=5,
    ).run().check()
    stats = multiconn_tls_server.wait_for(lambda s: s.tls_ragged_eofs >= 3 and s.closed >= 3)
    assert stats.tls_ragged_eofs == 3
    assert all(
        "EOF without close_notify" in c.transcript for c in multiconn_tls_server.recently_closed()
    )


def test_close_with_close_notify_is_not_counted(multiconn_tls_server: EchoServer) -> None:
    MultiConnClient(
        multiconn_tls_server.address, 3, tls=multiconn_tls_server.client_tls, timeout=5
    ).run().check()
    stats = multiconn_tls_server.wait_for_closed(3)
    assert stats.tls_ragged_eofs == 0


def test_tls_faults_need_a_tls_client(multiconn_server: EchoServer) -> None:
    with pytest.raises(TypeError, match="TLS fault"):
        MultiConnClient(multiconn_server.address, 1, faults=[NoCloseNotify()], timeout=5).run()


# -- bad server certificates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [WrongHostCert(), ExpiredCert(), UntrustedCert()], ids=lambda f: type(f).__name__
)
def test_client_refuses_a_bad_server_certificate(
    fault: CertFault, multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(cert_fault=fault))
    results = MultiConnClient(server.address, 2, tls=server.client_tls, timeout=5).run()
    assert not results.ok
    for result in results:
        assert fault.client_error in (result.error or ""), result
        assert result.received == 0
    stats = server.wait_for_closed(2)
    assert stats.tls_handshakes == 0
    assert stats.tls_failures == 2  # the server sees the client's alert


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"host": ""}, "WrongHostCert: host must be a non-empty string, got ''"),
        ({"host": ["a"]}, r"WrongHostCert: host must be a non-empty string, got \['a'\]"),
        ({"probability": 0.5}, "presents its certificate to every connection"),
    ],
)
def test_certificate_faults_are_faults_like_the_others(bad: dict[str, object], match: str) -> None:
    # One model: frozen, checked where given, replace(), the one repr (issue 23).
    assert all(isinstance(f, Fault) for f in (WrongHostCert(), ExpiredCert(), UntrustedCert()))
    assert repr(WrongHostCert().replace(host="x.test")) == "WrongHostCert(host='x.test')"
    assert WrongHostCert("a.test") == WrongHostCert(host="a.test")
    with pytest.raises(FaultParameterError, match=match):
        WrongHostCert(**bad)  # type: ignore[arg-type]


def test_client_accepts_the_good_server_certificate(
    multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(cert_fault=None))
    MultiConnClient(server.address, 2, tls=server.client_tls, timeout=5).run().check()
    assert server.wait_for_closed(2).tls_handshakes == 2


# -- client certificates --------------------------------------------------------------------------


def test_missing_client_certificate_is_refused(
    multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(require_client_cert=True))
    no_cert = multiconn_tls.replace(require_client_cert=False).client_context
    results = MultiConnClient(server.address, 2, tls=no_cert, timeout=5).run()
    assert not results.ok
    # TLS 1.3: the client's handshake completes before the server checks its certificate,
    # so the client learns it from the alert or from the closed connection, whichever it
    # meets first (its first write or read).
    assert all(r.error and r.received == 0 for r in results), results
    stats = server.wait_for_closed(2)
    assert stats.tls_failures == 2
    assert stats.tls_handshakes == 0
    assert all("TLS handshake failed" in c.close_reason for c in server.recently_closed())


def test_client_certificate_from_another_ca_is_refused(
    multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(require_client_cert=True))
    stranger = TLSConfig(require_client_cert=True).client_context
    stranger.load_verify_locations(cadata=multiconn_tls.ca_pem.decode())
    results = MultiConnClient(server.address, 1, tls=stranger, timeout=5).run()
    assert not results.ok
    assert server.wait_for_closed(1).tls_failures == 1


def test_client_certificate_from_the_ca_is_accepted(
    multiconn_server_factory: Factory, multiconn_tls: TLSConfig
) -> None:
    server = multiconn_server_factory(tls=multiconn_tls.replace(require_client_cert=True))
    MultiConnClient(server.address, 2, tls=server.client_tls, timeout=5).run().check()
    stats = server.wait_for_closed(2)
    assert (stats.tls_handshakes, stats.tls_failures) == (2, 0)


# -- plaintext to a TLS port ----------------------------------------------------------------------


def test_plaintext_to_tls_port_is_dropped_and_others_keep_working(
    multiconn_tls_server: EchoServer,
) -> None:
    server = multiconn_tls_server
    assert server.client_tls is not None
    # A TLS connection that is open across the whole episode.
    raw = socket.create_connection(server.address[:2], timeout=5)
    with server.client_tls.wrap_socket(raw, server_hostname="127.0.0.1") as steady:
        steady.sendall(b"before")
        assert steady.recv(100) == b"before"
        plain = MultiConnClient(server.address, 3, [b"GET / HTTP/1.0\r\n\r\n"], timeout=5).run()
        assert not plain.ok
        assert all(r.received == 0 for r in plain)
        stats = server.wait_for(
            lambda s: s.tls_failures >= 3 and s.open == 1, what="3 dropped plaintext clients"
        )
        assert stats.tls_failures == 3
        assert stats.open == 1  # only the steady TLS connection
        steady.sendall(b"after")
        assert steady.recv(100) == b"after"
    MultiConnClient(server.address, 4, tls=server.client_tls, timeout=5).run().check()
    reasons = [c.close_reason for c in server.recently_closed()]
    assert sum(r.startswith("TLS handshake failed") for r in reasons) == 3


def test_plaintext_to_plaintext_port_works(multiconn_server: EchoServer) -> None:
    MultiConnClient(
        multiconn_server.address, 3, [b"GET / HTTP/1.0\r\n\r\n"], timeout=5
    ).run().check()


# -- client faults over TLS -----------------------------------------------------------------------


def test_partial_send_makes_one_tls_record_per_chunk(multiconn_server_factory: Factory) -> None:
    data_events: list[int] = []
    server = multiconn_server_factory(
        tls=True,
        on_event=lambda event, conn, data: (
            data_events.append(len(data or b"")) if event == "data" else None
        ),
    )
    payload = bytes(range(200))
    MultiConnClient(
        server.address,
        1,
        [payload],
        tls=server.client_tls,
        faults=[PartialSend(max_chunk=1)],
        timeout=10,
    ).run().check()
    # SSL_read returns one record at a time: 200 one-byte records, 200 reads of one byte.
    assert data_events == [1] * 200


def test_without_partial_send_the_payload_is_one_record(multiconn_server_factory: Factory) -> None:
    data_events: list[int] = []
    server = multiconn_server_factory(
        tls=True,
        on_event=lambda event, conn, data: (
            data_events.append(len(data or b"")) if event == "data" else None
        ),
    )
    MultiConnClient(
        server.address, 1, [bytes(range(200))], tls=server.client_tls, timeout=5
    ).run().check()
    assert data_events == [200]


def test_never_reading_client_triggers_backpressure_through_tls(
    multiconn_server_factory: Factory,
) -> None:
    server = multiconn_server_factory(tls=True, high_water=64 * 1024)
    # 64 MiB, as the suite streams: a server that reads in large chunks lets Linux grow its
    # receive window fast (tcp_rmem's maximum is 32 MB on some machines), and the kernel
    # queues alone then hold 16 MiB, with no back-pressure needed.
    size = 64 * 1024 * 1024
    with MultiConnClient(
        server.address,
        1,
        tls=server.client_tls,
        faults=[NeverRead(size=size)],
        timeout=20,
        keep_open=True,
    ) as client:
        results = client.run()
        results.check()
        assert "backpressure" in results[0].note
        [info] = server.connections()
        assert info.reading_paused
        assert info.bytes_in < size
        assert server.stats().peak_buffered <= 64 * 1024 + 256 * 1024  # high water + one read


def test_slow_reader_drains_decrypted_bytes_the_selector_cannot_see(
    multiconn_tls_server: EchoServer,
) -> None:
    # SlowReader reads in small pieces: the rest of each 16 KiB record is already decrypted
    # inside OpenSSL (pending()), where the selector cannot see it.
    payload = os.urandom(256 * 1024)
    MultiConnClient(
        multiconn_tls_server.address,
        2,
        [payload],
        tls=multiconn_tls_server.client_tls,
        faults=[SlowReader(bytes_per_second=4 * 1024 * 1024)],
        timeout=20,
    ).run().check()


def test_half_close_over_tls_gets_the_full_echo_then_eof(multiconn_tls_server: EchoServer) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    MultiConnClient(
        multiconn_tls_server.address,
        2,
        [payload],
        tls=multiconn_tls_server.client_tls,
        faults=[HalfClose()],
        timeout=20,
    ).run().check()
    stats = multiconn_tls_server.wait_for_closed(2)
    assert stats.tls_ragged_eofs == 0


# -- the fault-injection suite in TLS mode ---------------------------------------------------------


def test_suite_passes_over_tls(multiconn_tls_server: EchoServer) -> None:
    report = check_echo_server(
        multiconn_tls_server.address, seed=7, tls=multiconn_tls_server.client_tls
    )
    assert report.rows
    assert all(row.passed for row in report.rows)
    assert multiconn_tls_server.stats().tls_handshakes > 100


def test_suite_in_tls_mode_fails_against_a_plaintext_server(multiconn_server: EchoServer) -> None:
    with pytest.raises(ContractBreak):
        check_echo_server(multiconn_server.address, seed=7, tls=TLSConfig().client_context)


def test_cli_suite_tls_with_cafile(multiconn_tls_server: EchoServer, tmp_path: Path) -> None:
    assert multiconn_tls_server.tls is not None
    assert multiconn_tls_server.tls.config is not None
    cafile = multiconn_tls_server.tls.config.write_ca_cert(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_multiconn",
            "suite",
            "127.0.0.1",
            str(multiconn_tls_server.port),
            "--tls",
            "--cafile",
            str(cafile),
            "--seed",
            "3",
            "--only",
            "exchange",
            "--only",
            "partial_send",
            "--only",
            "half_close",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" pass ") == 2, proc.stdout
    assert proc.stdout.count(" n/a ") == 1, proc.stdout  # half-close over TLS: said why


def test_cli_suite_tls_against_the_wrong_ca_fails(
    multiconn_tls_server: EchoServer, tmp_path: Path
) -> None:
    cafile = TLSConfig().write_ca_cert(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_multiconn",
            "suite",
            "127.0.0.1",
            str(multiconn_tls_server.port),
            "--tls",
            "--cafile",
            str(cafile),
            "--seed",
            "3",
            "--only",
            "exchange",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "unable to get local issuer certificate" in proc.stdout


def test_ssl_module_is_the_one_we_expect() -> None:
    # The essay next to the code relies on OpenSSL behaviour; say which one ran the tests.
    assert ssl.OPENSSL_VERSION_INFO >= (1, 1, 1)
