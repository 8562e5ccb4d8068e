#!/usr/bin/env python3
"""Idle memory: the server's RSS per connection while it holds N idle
connections (default 10,000).

usage: scripts/idle-rss.py PID PORT [N]
Prints the server's RSS before, with N connections open, and the cost
per connection. Each connection exchanges one message first, so that it
has been through the server's whole read/write path once. The shared
receive-buffer pool is warmed up before the baseline: it is a fixed cost
(--buffers x --buffer-size at most), not a per-connection one."""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Warm up: cycle once through the whole receive-buffer pool, so that
    # its pages (a fixed cost, shared by all connections) are resident
    # before the baseline is taken.
    w = socket.create_connection(("127.0.0.1", port))
    for i in range(4096):
        w.sendall(b"warm")
        if w.recv(16) != b"warm":
            raise SystemExit("bad echo")
    w.close()
    time.sleep(0.2)
    before = rss_kib(pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"ping")
        socks.append(s)
    for s in socks:
        if s.recv(16) != b"ping":
            raise SystemExit("bad echo")
    time.sleep(0.5)
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"connections {n} rss_before_kib {before} rss_after_kib {after} "
          f"bytes_per_conn {per:.0f}")
    for s in socks:
        s.close()


main()
