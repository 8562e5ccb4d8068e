#!/usr/bin/env python3
"""Hot-reload figures: the time from a save to the new handler answering,
and a reload under N open connections (default 10,000) with proof that
none was dropped.

usage: scripts/reload-figures.py [N]     (builds nothing: run `make` first)
"""
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

ECHO = 'return { on_data = function(c, d) c:send(d) end }\n'
UPPER = 'return { on_data = function(c, d) c:send(d:upper()) end }\n'


def start(script):
    p = subprocess.Popen(["./moonring", "-p", "0", script],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "listening on 127.0.0.1:" in line:
            port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])
            return p, port
    raise SystemExit("server did not start")


def save(path, text):
    """Save the way vim does: write a new file, rename it over the old."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def save_to_active(path, port, rounds=10):
    """Ping every 0.5 ms; time from the save until the answer changes."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for i in range(rounds):
        want = b"PING" if i % 2 == 0 else b"ping"
        t0 = time.monotonic()
        save(path, UPPER if i % 2 == 0 else ECHO)
        while True:
            s.sendall(b"ping")
            if s.recv(16) == want:
                break
            time.sleep(0.0005)
        times.append((time.monotonic() - t0) * 1000)
        time.sleep(0.1)
    s.close()
    times.sort()
    return times[len(times) // 2], times[-1]


def many(path, port, n, proc):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for s in socks:
        s.sendall(b"a")
    for s in socks:
        assert s.recv(8) == b"a"
    save(path, UPPER)
    time.sleep(0.3)
    ok = 0
    for s in socks:
        s.sendall(b"b")
    for s in socks:
        if s.recv(8) == b"B":
            ok += 1
    for s in socks:
        s.close()
    return ok


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    d = tempfile.mkdtemp()
    path = os.path.join(d, "app.lua")
    with open(path, "w") as f:
        f.write(ECHO)
    proc, port = start(path)
    try:
        med, worst = save_to_active(path, port)
        print(f"save to new handler active: median {med:.1f} ms, worst {worst:.1f} ms")
        save(path, ECHO)
        time.sleep(0.2)
        ok = many(path, port, n, proc)
        print(f"reload with {n} connections open: {ok} of {n} answered by the new handler")
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=20)[1]
    for line in err.splitlines():
        if "reloaded" in line and f"{n} connection" in line:
            print("server log:", line.split("]", 1)[1].strip())


main()
