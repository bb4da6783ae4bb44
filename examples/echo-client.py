#!/usr/bin/env python3
"""The tutorial's first snippet: a blocking client that sends one message and prints the echo.

    python echo-client.py [host] [port]      (default 127.0.0.1 65432, as in the tutorial)
"""

import socket
import sys

HOST = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"  # the server's host name or address
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 65432  # the port used by the server

with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.settimeout(10)  # the tutorial blocks forever; a bound keeps a test from hanging
    s.connect((HOST, PORT))
    s.sendall(b"Hello, world")
    data = s.recv(1024)

print(f"Received {data!r}")
