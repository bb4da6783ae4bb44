"""The echo servers the benchmarks compare, each run alone in its own process.

    python benchmarks/servers.py --kind ours|asyncio|uvloop|tutorial [--backlog N]

Prints ``PORT <n>`` once the server accepts connections, then serves until its standard input
reaches end-of-file (the driver closes the pipe), and exits.  Every server listens on
127.0.0.1 with the same backlog (1024 by default, our EchoServer's): the asyncio default of 100
and the tutorial's ``listen()`` would otherwise lose SYNs in the 10,000-connection workload and
measure TCP's retransmission timer instead of the server.

* ``ours``: :class:`pytest_multiconn.EchoServer` with its defaults (background loop thread,
  64 KiB high-water mark, transcripts on), exactly what the ``multiconn_server`` fixture starts.
* ``asyncio`` / ``uvloop``: the textbook ``asyncio.Protocol`` echo server, whose
  ``data_received`` calls ``transport.write(data)`` (it ignores ``pause_writing``, as the
  textbook version does).
* ``tutorial``: the structure of the well-known ``selectors`` multi-connection tutorial server
  (one ``SimpleNamespace`` per connection, ``EVENT_READ | EVENT_WRITE`` always registered,
  ``recv(1024)``, bytes concatenation for the output), without its per-message ``print`` calls.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import sys
import types
from typing import Any


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def run_ours(backlog: int, profile: str | None = None) -> None:
    from pytest_multiconn import EchoServer

    if profile:
        from _common import profile_loop_thread  # the script's folder is on sys.path

        profile_loop_thread(profile)

    with EchoServer(port=0, backlog=backlog) as server:
        _announce(server.port)
        # The loop runs in its own thread; this one sleeps in read() without the GIL.
        sys.stdin.buffer.read()


def run_asyncio(backlog: int, use_uvloop: bool) -> None:
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=backlog)
        done = loop.create_future()

        def on_stdin() -> None:
            if not os.read(0, 4096) and not done.done():
                done.set_result(None)

        loop.add_reader(0, on_stdin)
        _announce(server.sockets[0].getsockname()[1])
        await done
        loop.remove_reader(0)
        server.close()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def run_tutorial(backlog: int) -> None:
    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(backlog)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, data=None)
    sel.register(sys.stdin, selectors.EVENT_READ, data="stdin")

    def accept_wrapper(sock: socket.socket) -> None:
        conn, addr = sock.accept()
        conn.setblocking(False)
        data = types.SimpleNamespace(addr=addr, inb=b"", outb=b"")
        sel.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE, data=data)

    def service_connection(key: selectors.SelectorKey, mask: int) -> None:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        data = key.data
        if mask & selectors.EVENT_READ:
            recv_data = sock.recv(1024)
            if recv_data:
                data.outb += recv_data
            else:
                sel.unregister(sock)
                sock.close()
                return
        if mask & selectors.EVENT_WRITE and data.outb:
            sent = sock.send(data.outb)
            data.outb = data.outb[sent:]

    _announce(lsock.getsockname()[1])
    try:
        while True:
            for key, mask in sel.select(timeout=None):
                if key.data is None:
                    accept_wrapper(key.fileobj)  # type: ignore[arg-type]
                elif key.data == "stdin":
                    if not os.read(0, 4096):
                        return
                else:
                    try:
                        service_connection(key, mask)
                    except ConnectionError:
                        # The tutorial would crash here; the benchmark's RST-close would
                        # otherwise end the server before the driver has read its numbers.
                        sel.unregister(key.fileobj)
                        key.fileobj.close()  # type: ignore[union-attr]
    finally:
        for key in list(sel.get_map().values()):
            if key.data != "stdin":
                key.fileobj.close()  # type: ignore[union-attr]
        sel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", required=True, choices=["ours", "asyncio", "uvloop", "tutorial"])
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--profile", metavar="FILE", help="ours only: cProfile the loop thread")
    args = parser.parse_args(argv)
    _raise_nofile()
    if args.kind == "ours":
        run_ours(args.backlog, args.profile)
    elif args.kind == "asyncio":
        run_asyncio(args.backlog, use_uvloop=False)
    elif args.kind == "uvloop":
        run_asyncio(args.backlog, use_uvloop=True)
    else:
        run_tutorial(args.backlog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
