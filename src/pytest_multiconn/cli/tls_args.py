"""The TLS arguments of ``multiconn server`` and the client commands (``--tls``...)."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from pytest_multiconn.tls.config import TLSConfig


def add_server_tls_arguments(parser: Any) -> None:
    """``--tls`` and ``--ca-out`` for ``multiconn server``."""
    parser.add_argument(
        "--tls", action="store_true",
        help="serve TLS with a certificate from a throw-away CA, whose certificate is written "
        "to a file (printed) for clients such as `openssl s_client -CAfile FILE`",
    )
    parser.add_argument(
        "--ca-out", default=None, metavar="PATH",
        help="with --tls: write the CA certificate here (a file or a directory) and keep it; "
        "default: a temporary directory removed when the server exits",
    )


def add_client_tls_arguments(parser: Any) -> None:
    """``--tls``, ``--cafile`` and ``--server-hostname`` for client commands."""
    parser.add_argument("--tls", action="store_true", help="connect with TLS (needs --cafile)")
    parser.add_argument(
        "--cafile", default=None, metavar="PATH",
        help="with --tls: the CA certificate to trust (what `multiconn server --tls` printed)",
    )
    parser.add_argument(
        "--server-hostname", default=None, metavar="NAME",
        help="with --tls: the name to check the certificate against (default: the host)",
    )


@contextlib.contextmanager
def cli_server_tls(args: Any, out: Callable[[str], None]) -> Iterator[TLSConfig | None]:
    """The TLS of ``multiconn server`` from its arguments; removes a temporary CA file after."""
    if not getattr(args, "tls", False):
        if getattr(args, "ca_out", None):
            raise ValueError("--ca-out needs --tls")
        yield None
        return
    config = TLSConfig()
    temporary = args.ca_out is None
    directory = tempfile.mkdtemp(prefix="multiconn-ca-") if temporary else args.ca_out
    try:
        try:
            path = config.write_ca_cert(directory)
        except OSError as exc:
            # '/proc/version' gave a bare "[Errno 5] Input/output error": name the path.
            raise ValueError(
                f"--ca-out {directory!r}: cannot write the CA certificate there: "
                f"{exc.strerror or exc}"
            ) from exc
        out(f"TLS CA certificate: {path}")
        yield config
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def cli_client_tls(args: Any) -> ssl.SSLContext | None:
    """A client SSLContext from ``--tls --cafile PATH``, or None without ``--tls``."""
    if not getattr(args, "tls", False):
        if getattr(args, "cafile", None):
            raise ValueError("--cafile needs --tls")
        return None
    if not args.cafile:
        raise ValueError(
            "--tls needs --cafile PATH: the CA certificate `multiconn server --tls` printed"
        )
    if not os.path.isfile(args.cafile):
        raise ValueError(f"--cafile {args.cafile!r}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=args.cafile)
    return ctx
