"""The tutorial's multi-connection echo server, kept as a known-bad reference.

A faithful copy of the classic ``selectors`` multi-connection server (``multiconn-server.py``)
that the project grew from, bugs included, so the fault-injection suite can show what it
catches:

* it registers ``EVENT_READ | EVENT_WRITE`` for every connection, always, so ``select()``
  returns at once forever and the process spins at 100% CPU while connections sit idle;
* it appends whatever it reads to ``data.outb`` with no limit, so a client that never reads
  makes it buffer without bound;
* on EOF it closes at once, dropping any echo still in ``outb``: bytes lost on half-close;
* a reset peer raises out of ``recv`` and kills the whole server.

Run it as ``python tests/tutorial_server.py HOST PORT``.  The one deviation: port 0 is allowed,
and the "Listening on" line shows the port the kernel picked, so tests can read it (the
original prints the port it was given).  Nothing else is fixed: that is the point.
"""

import selectors
import socket
import sys
import types

sel = selectors.DefaultSelector()


def accept_wrapper(sock):
    conn, addr = sock.accept()  # Should be ready to read
    print(f"Accepted connection from {addr}")
    conn.setblocking(False)
    data = types.SimpleNamespace(addr=addr, inb=b"", outb=b"")
    events = selectors.EVENT_READ | selectors.EVENT_WRITE
    sel.register(conn, events, data=data)


def service_connection(key, mask):
    sock = key.fileobj
    data = key.data
    if mask & selectors.EVENT_READ:
        recv_data = sock.recv(1024)  # Should be ready to read
        if recv_data:
            data.outb += recv_data
        else:
            print(f"Closing connection to {data.addr}")
            sel.unregister(sock)
            sock.close()
    if mask & selectors.EVENT_WRITE:  # noqa: SIM102 - kept as the tutorial wrote it
        if data.outb:
            print(f"Echoing {data.outb!r} to {data.addr}")
            sent = sock.send(data.outb)  # Should be ready to write
            data.outb = data.outb[sent:]


if len(sys.argv) != 3:
    print(f"Usage: {sys.argv[0]} <host> <port>")
    sys.exit(1)

host, port = sys.argv[1], int(sys.argv[2])
lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lsock.bind((host, port))
lsock.listen()
# Deviation: report the bound port (port 0 lets the kernel pick one), flushed for the reader.
print(f"Listening on {lsock.getsockname()}", flush=True)
lsock.setblocking(False)
sel.register(lsock, selectors.EVENT_READ, data=None)

try:
    while True:
        events = sel.select(timeout=None)
        for key, mask in events:
            if key.data is None:
                accept_wrapper(key.fileobj)
            else:
                service_connection(key, mask)
except KeyboardInterrupt:
    print("Caught keyboard interrupt, exiting")
finally:
    sel.close()
