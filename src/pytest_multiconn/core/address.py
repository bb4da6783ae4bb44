"""Addresses: validating hosts and ports, and binding listening sockets safely."""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
from typing import TypeAlias

from pytest_multiconn.errors import AddressError, AddressInUseError, RemoteBindError

#: A TCP address as ``socket.getsockname()`` gives it: ``(host, port)`` for IPv4, and
#: ``(host, port)`` or ``(host, port, flowinfo, scope_id)`` for IPv6.
TCPAddress: TypeAlias = tuple[str, int] | tuple[str, int, int, int]

#: Where to connect: a TCP address or a Unix socket path.  What clients and proxies take.
Address: TypeAlias = TCPAddress | str | os.PathLike[str]

#: An :data:`Address` as a socket takes it: a TCP address, or a Unix socket path as a ``str``
#: (:func:`socket_address` makes one).  What the layers below the entry points pass around.
SocketAddress: TypeAlias = TCPAddress | str

#: What a started stream server's (or proxy's) ``.address`` is: ``(host, port)`` (IPv6
#: too: the first two fields), or the path of a Unix socket server.  Every one is an
#: :data:`Address`; ``.host`` and ``.port`` give the parts of a TCP one, typed.
ServerAddress: TypeAlias = tuple[str, int] | str

MAX_PORT = 65535

_LOCALHOST_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def socket_address(value: Address) -> SocketAddress:
    """``value`` as a socket takes it: a path-like Unix socket path becomes a ``str``."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def parse_port(value: object, *, what: str = "port") -> int:
    """Return ``value`` as a TCP port number, or raise :class:`AddressError` saying why not."""
    if isinstance(value, bool):
        raise AddressError(f"{what} must be an integer from 0 to 65535, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        # isdigit() alone takes any Unicode digit ('٣' is 3 to int()): ports are ASCII.
        if not (text.isascii() and text.isdigit()):
            raise AddressError(f"{what} must be an integer from 0 to 65535, got {value!r}")
        value = int(text)
    if not isinstance(value, int) or not 0 <= value <= MAX_PORT:
        raise AddressError(f"{what} must be an integer from 0 to 65535, got {value!r}")
    return value


def parse_hostport(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise AddressError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, parse_port(port)


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1, and the usual names of the loopback host."""
    if host.lower() in _LOCALHOST_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


# Cached (pure functions of a string): every server start asks both about the same host.
@functools.lru_cache(maxsize=256)
def family_for(host: str) -> socket.AddressFamily:
    if host.lower() in _LOCALHOST_NAMES:
        return socket.AF_INET6 if "6" in host else socket.AF_INET
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return socket.AF_INET
    return socket.AF_INET6 if isinstance(ip, ipaddress.IPv6Address) else socket.AF_INET


def normalise_host(host: str) -> str:
    """Map loopback names to literal addresses, so we never depend on a resolver."""
    lowered = host.lower()
    if lowered in ("localhost", "localhost.localdomain"):
        return "127.0.0.1"
    if lowered in ("ip6-localhost", "ip6-loopback"):
        return "::1"
    return host


def check_host(host: str, *, allow_remote: bool, role: str = "bind") -> str:
    """Refuse a non-loopback host unless the caller opted in; return the host to use."""
    if not isinstance(host, str) or not host:
        raise AddressError(f"host must be a non-empty string, got {host!r}")
    if "%" in host:
        # A zone index ('::1%lo') passed the loopback check and then failed in the resolver
        # with a raw gaierror; loopback addresses never need one.
        bare = host.split("%", 1)[0]
        raise AddressError(
            f"host {host!r} has a zone index ({host[len(bare):]!r}); loopback addresses need "
            f"none: use {bare!r}"
        )
    if not allow_remote and not is_loopback(host):
        raise RemoteBindError(
            f"refusing to {role} {host!r}: it is not a loopback address (127.0.0.0/8 or ::1). "
            f"Test servers should stay on loopback; pass allow_remote=True "
            f"(--allow-remote on the command line) if you really mean it"
        )
    return normalise_host(host)


def _bind_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(
                exc.errno,
                f"Unix socket path {path!r} already exists; remove it or use a fresh "
                "temporary path (tmp_path / 'server.sock')",
            ) from exc
        if exc.errno == errno.ENOENT:
            raise AddressError(
                f"cannot bind Unix socket {path!r}: directory "
                f"{os.path.dirname(path) or '.'!r} does not exist"
            ) from exc
        # Anything else (too long, not permitted, read-only...): say which path.
        raise AddressError(
            f"cannot bind Unix socket {path!r}: {exc.strerror or exc}"
        ) from exc
    return sock


def bind_listener(
    host: str | None,
    port: int,
    *,
    unix_path: str | os.PathLike[str] | None = None,
    backlog: int = 1024,
    allow_remote: bool = False,
) -> socket.socket:
    """Create, bind and listen a non-blocking socket; errors say what to do."""
    if unix_path is not None:
        sock = _bind_unix(os.fspath(unix_path))
    else:
        if host is None:
            raise AddressError("give a host, or unix_path for a Unix socket")
        port = parse_port(port)
        host = check_host(host, allow_remote=allow_remote)
        family = family_for(host)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name != "nt":
                # Lets a restarted server rebind a port whose old connections sit in TIME_WAIT;
                # it does not let two live listeners share a port on Linux.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # ``family``, not ``sock.family``: that property converts to an IntEnum each time.
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(
                    exc.errno,
                    f"{host}:{port} is already in use; pick another port, or port 0 for an "
                    "ephemeral one the kernel chooses",
                ) from exc
            if exc.errno == errno.EADDRNOTAVAIL:
                raise AddressError(f"cannot bind {host}:{port}: no such local address") from exc
            if exc.errno == errno.EAFNOSUPPORT:
                raise AddressError(
                    f"cannot bind {host}: address family not supported here"
                ) from exc
            raise
    try:
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
