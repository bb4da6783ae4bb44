"""Measurements the fault-injection suite takes from outside a server: echo latency probes,
the server process's CPU time, and how many bytes it holds in user space for one connection.

Linux exposes the last two without any help from the server, through ``/proc``:

* the process that owns a listening port is found by matching the socket's inode from
  ``/proc/net/tcp{,6}`` against the ``socket:[inode]`` links in ``/proc/<pid>/fd`` (only our own
  user's processes are readable, which is all a test needs);
* for one connection, the bytes a server has read but not yet written back are
  ``sent by us - our unsent (SIOCOUTQ) - its unread (rx_queue) - its unacked (tx_queue) - our
  unread (SIOCINQ)``; every term is exact on loopback, so what is left is the server's own
  buffer, to the byte.

Elsewhere (macOS, a remote host, a Unix socket) these return ``None`` and the suite falls back
to coarser checks; it never guesses.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_multiconn.core.address import SocketAddress

_SIOCINQ = 0x541B  # FIONREAD: bytes in our receive queue
_SIOCOUTQ = 0x5411  # TIOCOUTQ: bytes in our send queue (unsent + unacked)
_TCP_LISTEN = "0A"
_IPV4_BYTES = 4
_PROC_FIELDS = 10  # sl, local, remote, st, queues, tr, retrnsmt, uid, timeout, inode


def _parse_proc_addr(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == _IPV4_BYTES:
        host = str(ipaddress.IPv4Address(raw[::-1]))
    else:
        # Four 32-bit words, each in host (little-endian) order.
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        addr = ipaddress.IPv6Address(words)
        host = str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    return host, int(port_hex, 16)


def _tcp_rows() -> list[list[str]]:
    rows: list[list[str]] = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                rows.extend(line.split() for line in f)
        except OSError:
            continue
    return rows


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def listener_pid(address: SocketAddress) -> int | None:
    """The pid of a process listening on TCP ``(host, port)``, if Linux lets us see it (this
    process first, else the lowest pid)."""
    pids = listener_pids(address)
    if not pids:
        return None
    return os.getpid() if os.getpid() in pids else min(pids)


def listener_pids(address: SocketAddress) -> list[int]:
    """Every pid holding the socket listening on TCP ``(host, port)`` (a pre-fork server's
    master and workers all do), as far as Linux lets us see."""
    if isinstance(address, str):
        return []
    host, port = address[0], int(address[1])
    inodes = set()
    for row in _tcp_rows():
        if len(row) < _PROC_FIELDS or row[3] != _TCP_LISTEN:
            continue
        lhost, lport = _parse_proc_addr(row[1])
        if lport == port and (_same_host(lhost, host) or lhost in ("0.0.0.0", "::")):
            inodes.add(f"socket:[{row[9]}]")
    if not inodes:
        return []
    found = []
    for name in listdir("/proc"):
        if not name.isdigit():
            continue
        for fd in listdir(f"/proc/{name}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{name}/fd/{fd}") in inodes:
                    found.append(int(name))
                    break
    return sorted(found)


def accept_queue(address: SocketAddress) -> int | None:
    """Connections waiting in the accept queue of the listener at TCP ``(host, port)`` (the
    listening socket's ``rx_queue``); None where it cannot be read."""
    if isinstance(address, str):
        return None
    host, port = address[0], int(address[1])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    any_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    # One exact lookup by netlink (the listener matches an unconnected peer), where scanning
    # /proc/net/tcp reads every socket on the machine (14,000 rows took 30 ms).
    found = _diag_queues(family, (host, port), (any_host, 0))
    if found is not None:
        return found[0]
    for row in _tcp_rows():
        if len(row) < _PROC_FIELDS or row[3] != _TCP_LISTEN:
            continue
        lhost, lport = _parse_proc_addr(row[1])
        if lport == port and (_same_host(lhost, host) or lhost in ("0.0.0.0", "::")):
            return int(row[4].split(":")[1], 16)
    return None


def wait_accept_room(address: SocketAddress, room: int = 2, limit: float = 1.0) -> bool:
    """Wait (bounded by ``limit``) until the listener's accept queue holds fewer than
    ``room`` connections, so a connect does not overflow a small listen backlog (5, say)
    and wait a second for a SYN retry.  Where the queue cannot be read, it returns at once.
    False when the queue stayed full for ``limit`` (the server is not accepting)."""
    deadline = time.monotonic() + limit
    for _ in range(10_000):
        queued = accept_queue(address)
        if queued is None or queued < room:
            return True
        if time.monotonic() >= deadline:
            return False
        # A bounded poll of the kernel's count: the server accepts when it gets to it.
        time.sleep(0.002)
    return False


def listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (``/proc/<pid>/stat``)."""
    if pid == os.getpid():
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _task_files(pid: int, name: str) -> list[str] | None:
    """``/proc/<pid>/task/<tid>/<name>`` of each of ``pid``'s threads (one that exits or
    cannot be read meanwhile is left out); None when the process has no readable threads."""
    tasks = listdir(f"/proc/{pid}/task")
    if not tasks:
        return None
    texts = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/{name}") as f:
                texts.append(f.read())
        except OSError:
            continue
    return texts


def preemptions(pid: int) -> int | None:
    """How often the kernel took the CPU away from ``pid``'s threads while they still wanted
    it (``nonvoluntary_ctxt_switches``, summed over threads).

    A process blocked in ``select()`` is never preempted; one that spins is, all the time.  On
    a busy machine a spinner gets little CPU time but many preemptions, so this catches it
    where CPU time alone would not.
    """
    texts = _task_files(pid, "status")
    if texts is None:
        return None
    total = 0
    for text in texts:
        for line in text.splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def wanted_cpu_seconds(pid: int) -> float | None:
    """Seconds ``pid``'s threads spent on a CPU *or waiting for one* (``schedstat``: run time
    plus run-queue wait), summed over threads.

    A spinner is always runnable, so this grows at wall-clock speed however busy the machine
    is (on a loaded box it gets little CPU, but waits for it the rest of the time); a process
    blocked in ``select()`` adds nothing.  CPU time alone cannot tell them apart under load.
    """
    times = scheduled_seconds(pid)
    return None if times is None else times[0] + times[1]


def scheduled_seconds(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting for one) of ``pid``'s threads, summed, from
    ``schedstat`` (nanoseconds, where ``/proc/<pid>/stat`` counts CPU in 10 ms ticks)."""
    texts = _task_files(pid, "schedstat")
    if texts is None:
        return None
    run = wait = 0
    for text in texts:
        try:
            run_ns, wait_ns, _ = text.split()
        except ValueError:
            continue
        run += int(run_ns)
        wait += int(wait_ns)
    return run / 1e9, wait / 1e9


def runnable_threads(pid: int) -> int | None:
    """How many of ``pid``'s threads are runnable right now (state ``R``: on a CPU or waiting
    for one), from ``/proc/<pid>/task/<tid>/stat``.

    :func:`wanted_cpu_seconds` misses a thread that waits the whole time: the kernel adds a
    wait to ``schedstat`` only when the thread gets its CPU, so a server starved for seconds
    shows no wait at all until then (seen at ``SCHED_IDLE`` beside a busy CPU).  Its state
    shows it at once."""
    texts = _task_files(pid, "stat")
    if texts is None:
        return None
    # The state is the first field after the command name, which is in parentheses.
    return sum(1 for text in texts if text.rsplit(")", 1)[1].split()[:1] == ["R"])


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid``."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _queue(sock: socket.socket, request: int) -> int:
    buf = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF


def _diag_queues(family: int, local: Any, remote: Any) -> tuple[int, int] | None:
    """``(rx_queue, tx_queue)`` of the TCP socket bound to ``local`` and connected to
    ``remote``, asked of the kernel by NETLINK_SOCK_DIAG: one exact lookup, where scanning
    /proc/net/tcp costs a read of every socket on the machine (16,000 rows took 0.2 s)."""
    try:
        src = socket.inet_pton(family, local[0]).ljust(16, b"\0")
        dst = socket.inet_pton(family, remote[0]).ljust(16, b"\0")
    except (OSError, ValueError):
        return None
    sockid = (struct.pack("!HH", local[1], remote[1]) + src + dst
              + struct.pack("=III", 0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE))
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.send(header + request)
            reply = nl.recv(65536)
    except (OSError, AttributeError):
        return None
    if len(reply) < 16 + 72:
        return None
    kind = struct.unpack_from("=H", reply, 4)[0]
    if kind != _SOCK_DIAG_BY_FAMILY:
        return None
    rqueue, wqueue = struct.unpack_from("=II", reply, 16 + 4 + 48 + 4)
    return int(rqueue), int(wqueue)


def peer_queues(sock: socket.socket) -> tuple[int, int] | None:
    """``(rx_queue, tx_queue)`` of the server's end of our connection ``sock``: what it has
    not read yet, and what it wrote that we have not received (Linux, same machine)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        ours = sock.getsockname()
        peer = sock.getpeername()
    except OSError:
        return None
    found = _diag_queues(sock.family, peer, ours)
    if found is not None:
        return found
    for row in _tcp_rows():
        if len(row) < _PROC_FIELDS:
            continue
        lhost, lport = _parse_proc_addr(row[1])
        rhost, rport = _parse_proc_addr(row[2])
        if (lport, rport) != (peer[1], ours[1]):
            continue
        if not (_same_host(lhost, peer[0]) and _same_host(rhost, ours[0])):
            continue
        tx_hex, rx_hex = row[4].split(":")
        return int(rx_hex, 16), int(tx_hex, 16)
    return None


def server_held_bytes(sock: socket.socket, sent: int, received: int) -> int | None:
    """Bytes the server at ``sock``'s peer has read from us and not yet sent back.

    ``sent``/``received`` are what our side wrote and read on ``sock``.  None when the kernel
    queues cannot be read (not Linux, not TCP, or the server's socket is not visible).
    """
    flow = request_flow(sock, sent, received)
    return None if flow is None else flow[0] - flow[1]


def _queues(sock: socket.socket) -> tuple[int, int, int, int] | None:
    """``(our_out, our_in, server_rx, server_tx)``: the four kernel queues of a loopback TCP
    connection, or None where they cannot be read."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        our_out = _queue(sock, _SIOCOUTQ)
        our_in = _queue(sock, _SIOCINQ)
    except OSError:
        return None
    queues = peer_queues(sock)
    if queues is None:
        return None
    return our_out, our_in, *queues


def request_flow(sock: socket.socket, sent: int, received: int) -> tuple[int, int] | None:
    """``(consumed, delivered)``: bytes of ours the server has read, and bytes it wrote to
    its kernel (in flight to us, or read by us).  Every term is exact on loopback."""
    queues = _queues(sock)
    if queues is None:
        return None
    our_out, our_in, server_rx, server_tx = queues
    return sent - our_out - server_rx, server_tx + our_in + received


def server_read(sock: socket.socket, sent: int) -> tuple[int, int] | None:
    """``(consumed, waiting)``: bytes of ours the server has read, and bytes of ours waiting
    unread in its receive queue (exact on loopback), or None where they cannot be seen."""
    queues = _queues(sock)
    if queues is None:
        return None
    our_out, _our_in, server_rx, _server_tx = queues
    return sent - our_out - server_rx, server_rx


#: The hiccup meter's wake-up interval, and the lateness it notes as a stall of the process.
_TICK = 0.005
_STALL_NOTED = 0.02
_MAX_STALLS = 100_000


class _ProbeThread:
    """A probe's thread: ``with`` starts it, and at the end asks it to stop and joins it
    (bounded: the probe's ``timeout`` plus a second)."""

    timeout: float
    #: Seconds each round trip took, in order.
    trips: list[float]

    @property
    def worst(self) -> float:
        return max(self.trips, default=0.0)

    def _make_thread(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="multiconn-probe", daemon=True)
        self._meter = threading.Thread(target=self._measure_stalls, name="multiconn-hiccups",
                                       daemon=True)
        #: ``(start, end)`` of each stall of this process longer than _STALL_NOTED.
        self.stalls: list[tuple[float, float]] = []

    def _run(self) -> None:
        raise NotImplementedError

    def _measure_stalls(self) -> None:
        # A hiccup meter: a thread that asks to wake every _TICK and notes how much later it
        # did.  A late wake-up means this process got no CPU (or no GIL) for that long, and
        # then a slow probe trip is the machine's doing, not the server's: a server that
        # starves one connection for another does not delay this thread.
        for _ in range(10_000_000):
            before = time.monotonic()
            if self._stop.wait(_TICK):
                return
            after = time.monotonic()
            if after - before - _TICK > _STALL_NOTED and len(self.stalls) < _MAX_STALLS:
                self.stalls.append((before + _TICK, after))

    def stalled_between(self, start: float, end: float) -> float:
        """Seconds this process was stalled (not scheduled) between ``start`` and ``end``."""
        return sum(max(0.0, min(e, end) - max(s, start)) for s, e in self.stalls)

    def __enter__(self) -> Self:
        self._thread.start()
        self._meter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1.0)
        self._meter.join(self.timeout + 1.0)


@dataclass
class LatencyProbe(_ProbeThread):
    """A thread doing small echo round trips on its own connection until stopped.

    A server that lets one connection starve the others shows up as slow or failed trips.
    """

    address: SocketAddress
    size: int = 32
    pace: float = 0.005
    timeout: float = 5.0
    max_trips: int = 100_000
    trips: list[float] = field(default_factory=list)
    error: str | None = None
    #: A client SSLContext (or TLSConfig) to probe a TLS server; None for plaintext.
    tls: Any = None

    def __post_init__(self) -> None:
        self._make_thread()

    def _run(self) -> None:
        payload = bytes(range(self.size % 256)) * (self.size // 256 + 1)
        payload = payload[: self.size] or b"p"
        try:
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as raw:
                raw.settimeout(self.timeout)
                raw.connect(self.address[:2])
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = raw
                if self.tls is not None:
                    from pytest_multiconn.tls.config import client_tls

                    # wrap_socket detaches raw: the TLS socket is the one to close.
                    sock = client_tls(self.tls, self.address).context.wrap_socket(
                        raw, server_hostname=str(self.address[0])
                    )
                    self._tls_sock = sock
                for _ in range(self.max_trips):
                    if self._stop.is_set():
                        return
                    start = time.perf_counter()
                    sock.sendall(payload)
                    got = b""
                    while len(got) < len(payload):
                        chunk = sock.recv(len(payload) - len(got))
                        if not chunk:
                            self.error = "the server closed the probe connection"
                            return
                        got += chunk
                    self.trips.append(time.perf_counter() - start)
                    if got != payload:
                        self.error = f"probe echo differed: sent {payload!r}, got {got!r}"
                        return
                    # Pacing between trips (not synchronisation): a stop request ends it early.
                    self._stop.wait(self.pace)
        except OSError as exc:
            self.error = f"probe failed: {type(exc).__name__}: {exc}"
        finally:
            tls_sock = getattr(self, "_tls_sock", None)
            if tls_sock is not None:
                tls_sock.close()

    def median(self) -> float:
        trips = sorted(self.trips)
        return trips[len(trips) // 2] if trips else 0.0


def listen_counters() -> dict[str, int] | None:
    """The kernel's ``TcpExt`` counters for a full listen queue (``ListenOverflows``,
    ``ListenDrops``, ``SyncookiesSent``) from ``/proc/net/netstat``; None off Linux.

    They are counters of the whole network namespace: the suite reads them before and after
    its own burst, and blames the backlog only when its own connections were delayed too.
    """
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            names = ("ListenOverflows", "ListenDrops", "SyncookiesSent")
            return {n: int(table.get(n, 0)) for n in names}
    return None


#: How soon after another connection closed a starved trip must end to blame that connection.
_CLOSE_SLACK = 0.1


class ExchangeProbe(_ProbeThread):
    """A thread doing one request/reply trip after another on its own connection (a new
    connection per trip when the server closes after each reply), until stopped.

    A server that lets one connection starve the others shows up as a slow or failed trip;
    ``waited_for_close`` says whether the slowest trip ended just after another connection
    closed (``mark_close()`` is called when it does), the mark of a serial server.
    """

    def __init__(  # noqa: PLR0917 - mirrors LatencyProbe's fields
        self, address: SocketAddress, exchange: Any, tls: Any = None, timeout: float = 5.0,
                 pace: float = 0.005, seed: int = 0) -> None:
        import random

        self.address = address
        self.exchange = exchange
        self.tls = tls
        self.timeout = timeout
        self.pace = pace
        self.rng = random.Random(seed)
        self.trips: list[float] = []
        self.worst_end = 0.0
        self.error: str | None = None
        self.closes: list[float] = []
        self._make_thread()

    def mark_close(self) -> None:
        """Another connection of the check just closed."""
        self.closes.append(time.monotonic())

    def _run(self) -> None:
        from pytest_multiconn.exchanges.base import ReplyReader
        from pytest_multiconn.suite.peers import PeerError, open_socket, read_replies

        sock: socket.socket | None = None
        try:
            for _ in range(100_000):
                if self._stop.is_set():
                    return
                if sock is None:
                    # Not timed: a SYN the kernel dropped from a full listen queue (other
                    # checks connect too) waits a second for its retry; the burst row
                    # reports small backlogs.  A trip is a request and its reply.
                    sock = open_socket(self.address, self.tls, self.timeout)
                start = time.monotonic()
                (request,) = self.exchange.requests(1, self.rng, 32)
                reader = ReplyReader(self.exchange, [request])
                sock.sendall(request)
                read_replies(sock, reader, start + self.timeout)
                end = time.monotonic()
                trip = end - start
                if trip >= max(self.trips, default=0.0):
                    self.worst_end = end
                self.trips.append(trip)
                problem = reader.first_problem()
                if problem is not None:
                    self.error = f"probe reply wrong: {problem}"
                    return
                if reader.closed_after is not None:
                    sock.close()
                    sock = None
                self._stop.wait(self.pace)
        except (OSError, PeerError) as exc:
            self.error = f"probe failed: {type(exc).__name__}: {exc}"
        finally:
            if sock is not None:
                sock.close()

    def worst_not_stalled(self) -> float:
        """The slowest trip minus the time this process itself was stalled during it."""
        worst = self.worst
        return worst - self.stalled_between(self.worst_end - worst, self.worst_end)

    def waited_for_close(self) -> bool:
        """The slowest trip ended within 100 ms after another connection closed."""
        return any(0 <= self.worst_end - c < _CLOSE_SLACK for c in self.closes)
