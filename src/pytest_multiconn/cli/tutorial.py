"""The tutorial's two programs, on the library: same command lines, same output lines.

``multiconn-server.py <host> <port>`` and ``multiconn-client.py <host> <port> <num_connections>``
print what the original ``selectors`` tutorial prints, but run on :class:`EchoServer` and
:class:`MultiConnClient`, so they do not spin, do not lose bytes on half-close, and close idle
clients when asked to.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pytest_multiconn.cli.signals import stop_on_signals, wait_for_stop
from pytest_multiconn.client.multiconn import DEFAULT_MESSAGES, ClientResults, MultiConnClient
from pytest_multiconn.core.address import Address, parse_port
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT
from pytest_multiconn.core.server import ServerBase
from pytest_multiconn.servers.echo import EchoServer

Printer = Callable[[str], None]


#: Exit status of a command whose stdout went away (``| head -1``): what a shell reports
#: for a tool killed by SIGPIPE (128 + 13).
STDOUT_GONE = 141


def printer(
    stream: TextIO | None = None, *, on_gone: Callable[[], None] | None = None
) -> Printer:
    """A thread-safe line printer that flushes every line (the loop thread prints too).

    When the reader of stdout goes away (``multiconn server ... | head -1``) the write fails
    with EPIPE, whichever thread prints: the printer then prints nothing more, points stdout
    at ``/dev/null`` (so the flush at exit raises nothing either) and calls ``on_gone()``
    once, which stops a long-running command; it never raises.
    """
    lock = threading.Lock()
    gone = False

    def out(line: str) -> None:
        nonlocal gone
        target = stream if stream is not None else sys.stdout
        with lock:
            if gone:
                return
            try:
                target.write(line + "\n")
                target.flush()
            except BrokenPipeError:
                gone = True
                _silence(target)
            else:
                return
        if on_gone is not None:
            on_gone()

    return out


def _silence(stream: TextIO) -> None:
    # Python's advice for EPIPE: point the descriptor at /dev/null, so the interpreter's own
    # flush at exit does not print "Exception ignored ... BrokenPipeError".
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a real file (a test's StringIO): nothing to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def peer_text(addr: Any) -> str:
    """The tutorial prints peers as Python tuples: ``('127.0.0.1', 61354)``."""
    if isinstance(addr, tuple):
        return repr(tuple(addr[:2]))
    return repr(addr)


def server_observer(out: Printer) -> Callable[[str, Connection, bytes | None], None]:
    def observe(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "accept":
            out(f"Accepted connection from {peer_text(conn.peer)}")
        elif event == "data":
            out(f"Echoing {data!r} to {peer_text(conn.peer)}")
        elif event == "close":
            out(f"Closing connection to {peer_text(conn.peer)}")

    return observe


def serve(
    host: str,
    port: int | str,
    *,
    out: Printer,
    stop: threading.Event,
    wait: Callable[[], object] | None = None,
    protocol: str = "echo",
    **server_options: Any,
) -> ServerBase:
    """Run the tutorial's server (or a built-in ``protocol`` server: line, http, redis) until
    ``stop`` is set (``wait()`` returns, if given); returns the stopped server."""
    server: ServerBase
    if protocol == "echo":
        server = EchoServer(host, parse_port(port), on_event=server_observer(out),
                            **server_options)
    else:
        from pytest_multiconn.servers.fakes import handler_factory
        from pytest_multiconn.servers.protocol import ProtocolServer

        server = ProtocolServer(handler_factory(protocol), host, parse_port(port),
                                **server_options)
    server.start()
    try:
        out(f"Listening on {peer_text(server.address)}")
        (wait or stop.wait)()
    finally:
        server.stop()
    server.check()
    return server


def serve_until_interrupted(
    host: str,
    port: int | str,
    out: Printer,
    *,
    stop: threading.Event | None = None,
    **server_options: Any,
) -> int:
    """The tutorial's main loop: serve until Ctrl-C (or SIGTERM, or ``request_stop(stop)``),
    then exit cleanly."""
    stop = threading.Event() if stop is None else stop
    try:
        with stop_on_signals(stop):
            serve(host, port, out=out, stop=stop, wait=lambda: wait_for_stop(stop),
                  **server_options)
    except KeyboardInterrupt:
        out("Caught keyboard interrupt, exiting")
    return 0


def client_observer(out: Printer, address: Address) -> Callable[[str, int, bytes | None], None]:
    def observe(event: str, conn_id: int, data: bytes | None) -> None:
        if event == "start":
            out(f"Starting connection {conn_id} to {peer_text(address)}")
        elif event == "send":
            out(f"Sending {data!r} to connection {conn_id}")
        elif event == "recv":
            out(f"Received {data!r} from connection {conn_id}")
        elif event == "close":
            out(f"Closing connection {conn_id}")

    return observe


def run_client(
    host: str,
    port: int | str,
    num_connections: int | str,
    *,
    out: Printer,
    messages: Sequence[bytes] = DEFAULT_MESSAGES,
    timeout: float = DEFAULT_TIMEOUT,
    **client_options: Any,
) -> ClientResults:
    """The tutorial's client: ``num_connections`` connections, each sending ``messages``."""
    count = _parse_count(num_connections)
    address = (host, parse_port(port))
    client = MultiConnClient(
        address,
        count,
        messages,
        timeout=timeout,
        on_event=client_observer(out, address),
        **client_options,
    )
    return client.run()


def _parse_count(value: int | str) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"num_connections must be a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"num_connections must be a positive integer, got {value!r}")
    return count
