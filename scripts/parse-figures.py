#!/usr/bin/env python3
"""Parsing figures for the example servers: the server's CPU time for one
request made of many tiny pieces, sent in small writes, which a parser
that starts again from the beginning on every read pays for
quadratically.

  redis N   examples/redis.lua: one EXISTS with N one-byte arguments
            ("*N+1", "$6 EXISTS", then N times "$1 x"), about 7 bytes
            each
  http N    examples/http.lua: one POST /echo whose chunked body is N
            chunks of one byte ("1\\r\\nx\\r\\n"), 6 bytes each

Everything goes out in writes of --write bytes (default 1024); the CPU
time is the server's user + system time (/proc/PID/stat) from the first
write to the whole answer, the wall time the client's.

usage: scripts/parse-figures.py [--bin ./moonring] [--write 1024] [CASE N ...]
       (default: redis 300000 redis 1000000 http 400000; builds nothing:
       run `make` first)
"""
import os
import socket
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def start(binary, script):
    p = subprocess.Popen([binary, "-p", "0", script], stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "listening on 127.0.0.1:" in line:
            port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])
            # keep reading its log, so that the server never blocks on it
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return p, port
    raise SystemExit("%s %s did not start" % (binary, script))


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK   # utime, stime


def redis_request(n):
    return ("*%d\r\n$6\r\nEXISTS\r\n" % (n + 1)).encode() + b"$1\r\nx\r\n" * n, b":0\r\n"


def http_request(n):
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    tail = b"Content-Length: %d\r\n\r\n" % n + b"x" * n
    return head + b"1\r\nx\r\n" * n + b"0\r\n\r\n", tail


def measure(binary, case, n, write):
    script = {"redis": "examples/redis.lua", "http": "examples/http.lua"}[case]
    req, want_end = (redis_request if case == "redis" else http_request)(n)
    p, port = start(binary, script)
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c0, t0 = cpu(p.pid), time.monotonic()
        view = memoryview(req)
        for off in range(0, len(req), write):
            s.sendall(view[off:off + write])
        got = b""
        while not got.endswith(want_end):
            piece = s.recv(1 << 20)
            if not piece:
                raise SystemExit("%s %d: the server closed after %r" % (case, n, got[:200]))
            got += piece
        wall, used = time.monotonic() - t0, cpu(p.pid) - c0
        s.close()
        return len(req), used, wall
    finally:
        p.terminate()
        p.wait()


def main(argv):
    binary, write, cases = "./moonring", 1024, []
    i = 0
    while i < len(argv):
        if argv[i] == "--bin":
            binary, i = argv[i + 1], i + 2
        elif argv[i] == "--write":
            write, i = int(argv[i + 1]), i + 2
        else:
            cases.append((argv[i], int(argv[i + 1])))
            i += 2
    if not cases:
        cases = [("redis", 300000), ("redis", 1000000), ("http", 400000)]
    print("%-6s %9s %10s %9s %9s" % ("case", "pieces", "bytes", "CPU s", "wall s"))
    for case, n in cases:
        size, used, wall = measure(binary, case, n, write)
        print("%-6s %9d %10d %9.2f %9.2f" % (case, n, size, used, wall), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
