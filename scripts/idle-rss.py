#!/usr/bin/env python3
"""Idle memory: the server's RSS per connection while it holds N idle
connections (default 10,000).

usage: scripts/idle-rss.py PID PORT [N [echo|http|redis]]
Prints the server's RSS before, with N connections open, and the cost
per connection. Each connection makes one exchange first (an echo, an
HTTP GET / or a Redis PING), so that it has been through the server's
whole read/write path once. The server is warmed up with 4,096 exchanges
on one connection before the baseline, so that fixed costs such as a
shared receive-buffer pool are resident before it is taken: they are not
per connection."""
import resource
import socket
import sys
import time

PROBES = {
    "echo": (b"ping", b"ping"),
    "http": (b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n", b"HTTP/1.1 200"),
    "redis": (b"PING\r\n", b"+PONG\r\n"),
}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def answer(s, expect):
    """Read one whole answer: the expected start, then whatever else the
    server sent with it (an HTTP response's headers and body arrive in
    one segment on loopback)."""
    got = b""
    while len(got) < len(expect):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("idle-rss: server closed a connection")
        got += chunk
    if not got.startswith(expect):
        raise SystemExit(f"idle-rss: unexpected answer {got[:40]!r}")


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    request, expect = PROBES[sys.argv[4] if len(sys.argv) > 4 else "echo"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    w = socket.create_connection(("127.0.0.1", port))
    for i in range(4096):
        w.sendall(request)
        answer(w, expect)
    w.close()
    time.sleep(0.2)
    before = rss_kib(pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        socks.append(s)
    for s in socks:
        answer(s, expect)
    time.sleep(0.5)
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"connections {n} rss_before_kib {before} rss_after_kib {after} "
          f"bytes_per_conn {per:.0f}")
    for s in socks:
        s.close()


main()
