#!/usr/bin/env python3
"""hostile.py: the echo server's memory and latency against hostile clients.

usage: scripts/hostile.py [options] [-- SERVER_OPTIONS...]
       scripts/hostile.py soak-clients --echo-port P --http-port Q [...]
           (the hostile clients of make soak, against servers of its own;
           see soak_clients() below)

Starts its own moonring (the built-in echo) on a free loopback port,
pinned to one CPU (--server-cpu, 0) while every client runs on another
(--client-cpu, 1), once per --high-water value, and measures:

  non-reading clients
      N clients (--clients, 20 then 80), each with SO_RCVBUF 4096 set
      before it connects, write 64 KiB at a time without blocking until
      their sends block (no progress for 1 s, at most --push-seconds) and
      never read. Pushing also stops, with a note, if the machine's TCP
      memory (/proc/net/sockstat) reaches 3/4 of net.ipv4.tcp_mem's
      pressure threshold: past that the kernel shrinks every socket's
      buffers, those of other work on the machine too. Each client gets
      6-8 MiB in, most of it into the kernel's socket buffers, so 80 of
      them hold some 600-900 MiB of TCP memory for a few seconds.
      The server's RSS is taken once it has stopped growing,
      with the first N connected and again with all of them; the slope
      is the growth per client between the two. The bound is
      slope <= 1.25 x high-water + 64 KiB.
  flood fairness
      F connections (--flooders, 1 then 4) echo as fast as they can and
      read everything back, so that the server never holds their output
      back, for --seconds each: build/loadgen (64 KiB messages, 4 in
      flight per connection) when it is built, else this script's own
      flooder (64 KiB writes, 256 KiB in flight); see --flood-client.

Meanwhile one more client pings: it sends one 16-byte line every 10 ms
and waits for its echo; its p50/p99/max are reported for each phase, and
for the idle server (2 s) as the noise floor of the machine. The pinger
runs at nice -10 (when allowed: root), so that the other clients on its
CPU delay it as little as possible; they run at the normal priority
(niced, they starved whenever other work shared the machine).

RSS is the server's total VmRSS (/proc/PID/status; summed over its
workers with -w), taken after a warm-up that echoes 1.25 times the
receive buffer pool (--buffers x --buffer-size) through one connection,
so the pool's pages are resident before any figure: it is part of the
fixed cost, the same in every figure, and cancels out of the slope.
(The pool's own mapping cannot be told apart reliably: the kernel merges
it with neighbouring anonymous mappings.)

Options:
  --binary PATH        the server (default: moonring next to scripts/)
  --clients N1,N2      non-reading clients, first and second step (20,80)
  --seconds S          each flood measurement (default 4)
  --push-seconds S     longest a step pushes before its RSS is taken (8)
  --sndbuf B           SO_SNDBUF of the non-reading clients too (default:
                       the system's, autotuned up to net.ipv4.tcp_wmem);
                       smaller keeps the kernel's TCP memory down
  --high-water LIST    comma-separated values; "default" runs without the
                       option (64 KiB, moonring's default). Default:
                       1048576,default. A --high-water among the server
                       options after -- wins, for a single run.
  --flooders LIST      comma-separated flooder counts (default 1,4)
  --only TEST          nonreading or flood (default: both)
  --flood-client C     auto (loadgen if build/loadgen exists), loadgen
                       or python
  --repeat R           run everything R times; figures are medians, with
                       the lowest and highest value (default 1)
  --json FILE          also write the figures as JSON
  --check              exit 1 if a slope exceeds its bound or a ping p99
                       is 20 ms or more (otherwise the exit status is 0)
  --server-cpu N, --client-cpu N   the CPUs (default 0 and 1)
  -v, --verbose        progress, where the memory went (smaps), and the
                       server's SIGUSR1 stats

A round with the defaults (both tests, both high-water values) takes
about 45 s. The exit status is 0, or 1 with --check and a figure over
its bound, or 2 if the measurement itself failed (the server did not
start or died, a client lost its connection).
"""
import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HIGH_WATER = 64 << 10
LOADGEN = os.path.join(REPO, "build", "loadgen")
PING_LEN = 16
PING_INTERVAL = 0.010
PING_TIMEOUT = 2.0
CHUNK = 64 * 1024
FLOOD_WINDOW = 256 * 1024
P99_LIMIT_MS = 20.0
verbose = False


def log(*a):
    if verbose:
        print("hostile:", *a, file=sys.stderr, flush=True)


def die(msg):
    print("hostile: " + msg, file=sys.stderr, flush=True)
    sys.exit(2)


def bound_of(hw):
    return 1.25 * hw + 64 * 1024


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


# ---- the pinger and the flooders: child processes of this script -------

def pinger_main(port):
    """Ping every 10 ms; stdin says which phase we are in ("phase NAME")
    and when to stop ("end"); then print {phase: [latency_ms...]} as
    JSON, with lost pings (no echo within 2 s) counted separately."""
    try:   # ahead of the other clients on the shared CPU (needs root)
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    phase, res, lost = "start", {}, {}
    sent = got = 0
    seq = 0
    nxt = time.monotonic()
    inbuf = b""
    stdin = sys.stdin.buffer.raw
    while True:
        wait = max(0.0, nxt - time.monotonic())
        r, _, _ = select.select([stdin], [], [], wait)
        if r:
            data = os.read(stdin.fileno(), 4096)
            if not data:
                break
            inbuf += data
            done = False
            while b"\n" in inbuf:
                line, inbuf = inbuf.split(b"\n", 1)
                word = line.decode().split()
                if word and word[0] == "phase":
                    phase = word[1]
                elif word and word[0] == "end":
                    done = True
            if done:
                break
            continue
        msg = b"ping %010d\n" % (seq % 10**10)
        seq += 1
        t0 = time.perf_counter()
        try:
            _send_all(s, msg, t0 + PING_TIMEOUT)
            sent += len(msg)
            while got < sent:
                left = t0 + PING_TIMEOUT - time.perf_counter()
                if left <= 0:
                    break
                r, _, _ = select.select([s], [], [], left)
                if r:
                    b = s.recv(65536)
                    if not b:
                        raise ConnectionError("server closed the ping connection")
                    got += len(b)
        except (OSError, ConnectionError) as e:
            print(json.dumps({"error": str(e)}), flush=True)
            return
        dt = (time.perf_counter() - t0) * 1000.0
        if got < sent:
            lost[phase] = lost.get(phase, 0) + 1
        else:
            res.setdefault(phase, []).append(dt)
        nxt += PING_INTERVAL
        now = time.monotonic()
        if nxt < now:
            nxt = now   # a slow ping delays the next, no burst after it
    print(json.dumps({"lat": res, "lost": lost}), flush=True)


def _send_all(s, msg, deadline):
    view = memoryview(msg)
    while view:
        try:
            n = s.send(view)
            view = view[n:]
        except BlockingIOError:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise OSError("ping send timed out")
            select.select([], [s], [], left)


def flood_main(port, n):
    """n connections echoing as fast as they can, each with at most
    FLOOD_WINDOW bytes in flight; until stdin closes. Prints the bytes
    echoed back."""
    payload = memoryview(os.urandom(CHUNK))
    rbuf = bytearray(1 << 20)
    socks = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.setblocking(False)
        socks.append(c)
    inflight = {c.fileno(): 0 for c in socks}
    byfd = {c.fileno(): c for c in socks}
    total = 0
    p = select.poll()
    for c in socks:
        p.register(c, select.POLLIN | select.POLLOUT)
    p.register(sys.stdin.fileno(), select.POLLIN)
    stop = False
    while not stop:
        for fd, ev in p.poll(1000):
            if fd == sys.stdin.fileno():
                stop = True
                break
            c = byfd[fd]
            if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                print(json.dumps({"error": "flood connection closed"}), flush=True)
                return
            if ev & select.POLLIN:
                try:
                    k = c.recv_into(rbuf)
                except BlockingIOError:
                    k = -1
                if k == 0:
                    print(json.dumps({"error": "server closed a flood connection"}), flush=True)
                    return
                if k > 0:
                    inflight[fd] -= k
                    total += k
            if ev & select.POLLOUT and inflight[fd] < FLOOD_WINDOW:
                try:
                    k = c.send(payload[:min(CHUNK, FLOOD_WINDOW - inflight[fd])])
                    inflight[fd] += k
                except BlockingIOError:
                    pass
            mask = select.POLLIN | (select.POLLOUT if inflight[fd] < FLOOD_WINDOW else 0)
            p.modify(fd, mask)
    print(json.dumps({"bytes": total}), flush=True)


class Child:
    """A pinger or flooder: this script again, in its hidden mode."""

    def __init__(self, *args):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + list(args),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def say(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def finish(self, last=None):
        try:
            if last:
                self.say(last)
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        out = self.p.stdout.read()
        self.p.wait()
        try:
            return json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": "no result (exit status %s)" % self.p.returncode}


# ---- the server -----------------------------------------------------------

def opt_value(opts, name, default):
    for i, o in enumerate(opts):
        if o == name and i + 1 < len(opts):
            return opts[i + 1]
        if o.startswith(name + "="):
            return o.split("=", 1)[1]
    return default


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, opts, cpu):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="hostile-", suffix=".log", delete=False)
        argv = ["taskset", "-c", str(cpu), binary, "-p", str(self.port)]
        if opt_value(opts, "--log-level", None) is None:
            argv += ["--log-level", "info"]   # SIGUSR1's stats are at info
        argv += opts
        log("starting", " ".join(argv))
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=self.log, cwd=REPO)
        self.pid = self.p.pid          # taskset execs the server
        deadline = time.monotonic() + 10
        while True:
            if self.p.poll() is not None:
                die("the server exited at start (status %s): %s" % (self.p.returncode, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    die("the server did not start listening")
                time.sleep(0.05)

    def pids(self):
        out = [self.pid]
        try:
            for t in os.listdir("/proc/%d/task" % self.pid):
                with open("/proc/%d/task/%s/children" % (self.pid, t)) as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def alive(self):
        return self.p.poll() is None

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def smaps(self):
        """{mapping name: Rss KiB}, anonymous mappings (malloc's large
        chunks, the receive pool, Lua's arenas) lumped together."""
        out = {}
        try:
            with open("/proc/%d/smaps" % self.pid) as f:
                name = None
                for line in f:
                    parts = line.split()
                    if "-" in parts[0] and not parts[0].endswith(":"):
                        name = parts[5] if len(parts) > 5 else "[anon]"
                        if name == "[anon]":
                            name = "[anon mappings]"
                    elif parts[0] == "Rss:":
                        out[name] = out.get(name, 0) + int(parts[1])
        except OSError:
            pass
        return out

    def stats(self):
        """Ask for SIGUSR1's counters; the line it logs."""
        try:
            before = os.path.getsize(self.log.name)
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            return ""
        for _ in range(40):
            time.sleep(0.025)
            with open(self.log.name, errors="replace") as f:
                f.seek(before)
                for line in f:
                    if "stats:" in line:
                        return line.strip().split("stats: ", 1)[1]
        return ""

    def log_tail(self):
        with open(self.log.name, errors="replace") as f:
            return "".join(f.readlines()[-5:])

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        os.unlink(self.log.name)


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                w = line.split()
                return int(w[w.index("mem") + 1])
    return 0


def echo_warmup(port, nbytes):
    """Echo nbytes through one connection (reading it all back): the
    receive pool's pages become resident."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    payload = memoryview(os.urandom(CHUNK))
    rbuf = bytearray(1 << 20)
    sent = got = 0
    while got < nbytes:
        want_w = sent < nbytes and sent - got < FLOOD_WINDOW
        r, w, _ = select.select([s], [s] if want_w else [], [], 5)
        if not r and not w:
            die("warm-up: the echo stopped")
        if w:
            try:
                sent += s.send(payload)
            except BlockingIOError:
                pass
        if r:
            k = s.recv_into(rbuf)
            if k == 0:
                die("warm-up: the server closed the connection")
            got += k
    s.close()


# ---- the tests ------------------------------------------------------------

def settle(server, tracker, max_wait=15.0, window=1.5):
    """Wait until the server's RSS has stopped growing: over the last
    `window` seconds it moved by at most 64 KiB (or 0.5%). Returns the
    RSS, and whether it settled."""
    samples = []
    t_end = time.monotonic() + max_wait
    while True:
        if not server.alive():
            die("the server died: " + server.log_tail())
        r = server.rss_kib()
        tracker(r)
        now = time.monotonic()
        samples.append((now, r))
        old = [x for t, x in samples if t >= now - window]
        if samples[0][0] <= now - window:
            if max(old) - min(old) <= max(64, max(old) // 200):
                return r, True
        if now > t_end:
            return r, False
        time.sleep(0.1)


def tcp_mem_guard():
    """Pages of TCP memory (the whole machine's) at which pushing stops:
    three quarters of the kernel's pressure threshold, tcp_mem[1]. Past
    that threshold TCP starts to shrink every socket's buffers, ours and
    those of whatever else runs on the machine."""
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return int(f.read().split()[1]) * 3 // 4


def push(socks, max_seconds, tracker=None, server=None):
    """Write 64 KiB at a time to every socket until none has made
    progress for a second (their sends block), or max_seconds pass, or
    the machine's TCP memory reaches tcp_mem_guard(); in a child process,
    while this one samples the server's RSS. Returns the bytes each
    socket took, the seconds it took and why it stopped ("blocked",
    "time" or "tcp memory")."""
    rfd, wfd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        code = 1
        try:
            out = push_child(socks, max_seconds)
            os.write(wfd, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    out = b""
    while True:
        if tracker and server:
            tracker(server.rss_kib())
        r, _, _ = select.select([rfd], [], [], 0.1)
        if r:
            b = os.read(rfd, 65536)
            if not b:
                break
            out += b
    os.close(rfd)
    os.waitpid(pid, 0)
    if not out:
        die("the pushing clients failed")
    pushed, why = json.loads(out)
    return pushed, time.monotonic() - t0, why


def push_child(socks, max_seconds):
    payload = memoryview(os.urandom(CHUNK))
    pushed = {s.fileno(): 0 for s in socks}
    byfd = {s.fileno(): s for s in socks}
    p = select.poll()
    for s in socks:
        p.register(s, select.POLLOUT)
    guard = tcp_mem_guard()
    t0 = last = next_mem = time.monotonic()
    why = "blocked"
    while True:
        now = time.monotonic()
        if now - last > 1.0:
            break
        if now - t0 > max_seconds:
            why = "time"
            break
        if now >= next_mem:
            if tcp_mem_pages() >= guard:
                why = "tcp memory"
                break
            next_mem = now + 0.05
        for fd, ev in p.poll(100):
            if ev & (select.POLLERR | select.POLLHUP):
                p.unregister(fd)
                continue
            try:
                k = byfd[fd].send(payload)
                if k > 0:
                    pushed[fd] += k
                    last = time.monotonic()
            except BlockingIOError:
                pass
            except OSError:
                p.unregister(fd)
    return list(pushed.values()), why


def connect_nonreading(port, n, sndbuf=0):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    return socks


def smaps_growth(a, b):
    d = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
    return {k: v for k, v in sorted(d.items(), key=lambda kv: -abs(kv[1])) if abs(v) >= 256}


def run_nonreading(args, binary, opts, hw):
    server = Server(binary, opts, args.server_cpu)
    res = {"high_water": hw, "bound": bound_of(hw)}
    peak_tcp = [tcp_mem_pages()]
    peak_rss = [0]

    def tracker(r):
        peak_rss[0] = max(peak_rss[0], r)
        peak_tcp[0] = max(peak_tcp[0], tcp_mem_pages())

    t_start = time.monotonic()
    pinger = Child("--_ping", str(server.port))
    allsocks = []
    try:
        pool = int(opt_value(opts, "--buffers", 1024)) * int(opt_value(opts, "--buffer-size", 16384))
        rss_cold = server.rss_kib()
        echo_warmup(server.port, int(pool * 1.25) + (4 << 20))
        pinger.say("phase idle")
        time.sleep(2.0)
        rss0, _ = settle(server, tracker, max_wait=3.0, window=0.5)
        res["rss_cold_kib"], res["rss_base_kib"] = rss_cold, rss0
        maps0 = server.smaps()
        n1, n2 = args.clients
        steps = []
        for n in (n1, n2):
            pinger.say("phase nonreading")
            new = connect_nonreading(server.port, n - len(allsocks), args.sndbuf)
            allsocks += new
            pushed, took, why = push(new, args.push_seconds, tracker, server)
            rss, settled = settle(server, tracker)
            steps.append({"clients": n, "rss_kib": rss, "settled": settled, "push_stop": why,
                          "pushed_median": statistics.median(pushed), "push_s": took,
                          "smaps": server.smaps()})
            log("hw %d: %d non-reading clients: RSS %d KiB (%s), each pushed %.1f MiB in %.1f s (%s)"
                % (hw, n, rss, "settled" if settled else "STILL GROWING",
                   statistics.median(pushed) / 2**20, took, why))
        res["stats"] = server.stats()
        for s in allsocks:
            s.close()
        lat = pinger.finish("end")
        pinger = None
        if "error" in lat:
            die("pinger: " + lat["error"])
        a, b = steps
        res["rss1_kib"], res["rss2_kib"] = a["rss_kib"], b["rss_kib"]
        res["settled"] = a["settled"] and b["settled"]
        res["push_stop"] = sorted({a["push_stop"], b["push_stop"]})
        res["slope"] = (b["rss_kib"] - a["rss_kib"]) * 1024.0 / (n2 - n1)
        res["per_client_from_base"] = (a["rss_kib"] - rss0) * 1024.0 / n1
        res["pushed_mib"] = b["pushed_median"] / 2**20
        res["peak_rss_kib"] = peak_rss[0]
        res["peak_tcp_mem_mib"] = peak_tcp[0] * 4096 / 2**20
        res["growth"] = smaps_growth(a["smaps"], b["smaps"])
        res["growth_base"] = smaps_growth(maps0, a["smaps"])
        res["ping_idle"] = summary(lat["lat"].get("idle", []), lat["lost"].get("idle", 0))
        res["ping"] = summary(lat["lat"].get("nonreading", []), lat["lost"].get("nonreading", 0))
        res["seconds"] = time.monotonic() - t_start
    finally:
        if pinger:
            pinger.finish("end")
        for s in allsocks:
            s.close()
        server.stop()
    return res


def summary(v, lost):
    return {"n": len(v), "lost": lost, "p50": pct(v, 50), "p99": pct(v, 99),
            "max": max(v) if v else float("nan")}


class Flooders:
    """nflood connections echoing flat out: build/loadgen
    (64 KiB messages, 4 in flight per connection, every byte checked) or
    this script's own flooder (64 KiB writes, 256 KiB in flight)."""

    def __init__(self, kind, port, nflood, seconds):
        self.kind, self.t0 = kind, time.monotonic()
        if kind == "loadgen":
            self.p = subprocess.Popen(
                [LOADGEN, "-p", str(port), "-c", str(nflood),
                 "-s", str(CHUNK), "-P", "4", "-W", "0.5", "-d", str(seconds)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        else:
            self.p = Child("--_flood", str(port), str(nflood))

    def finish(self):
        """MiB/s echoed, or an error string."""
        if self.kind == "loadgen":
            out, err = self.p.communicate()
            w = out.decode().split()
            if self.p.returncode != 0 or "requests/s" not in w:
                return "loadgen: " + (err.decode().strip() or out.decode().strip())
            return float(w[w.index("requests/s") + 1]) * CHUNK / 2**20
        r = self.p.finish()
        if "error" in r:
            return r["error"]
        return r["bytes"] / 2**20 / (time.monotonic() - self.t0)


def run_flood(args, binary, opts, hw, flooders):
    """One server; the pinger on an idle server, then under each number
    of flooders in turn."""
    server = Server(binary, opts, args.server_cpu)
    t_start = time.monotonic()
    pinger = Child("--_ping", str(server.port))
    out = []
    try:
        pinger.say("phase idle")
        time.sleep(2.0)
        for i, nflood in enumerate(flooders):
            t_run = time.monotonic()
            pinger.say("phase ramp")
            flood = Flooders(args.flood_client, server.port, nflood, args.seconds)
            time.sleep(0.5)   # connect and ramp up (loadgen's warm-up)
            pinger.say("phase flood%d" % i)
            rss_peak = 0
            while time.monotonic() - t_run < 0.5 + args.seconds:
                time.sleep(0.1)
                rss_peak = max(rss_peak, server.rss_kib())
                if not server.alive():
                    die("the server died: " + server.log_tail())
            pinger.say("phase after")
            rate = flood.finish()
            if isinstance(rate, str):
                die("flooders: " + rate)
            out.append({"high_water": hw, "flooders": nflood, "flood_mib_s": rate,
                        "rss_peak_kib": rss_peak, "stats": server.stats(),
                        "seconds": time.monotonic() - t_run})
            time.sleep(0.5)
        lat = pinger.finish("end")
        pinger = None
        if "error" in lat:
            die("pinger: " + lat["error"])
        idle = summary(lat["lat"].get("idle", []), lat["lost"].get("idle", 0))
        for i, r in enumerate(out):
            r["ping_idle"] = idle
            r["ping"] = summary(lat["lat"].get("flood%d" % i, []), lat["lost"].get("flood%d" % i, 0))
        out[0]["seconds"] += time.monotonic() - t_start - sum(r["seconds"] for r in out)
        return out
    finally:
        if pinger:
            pinger.finish("end")
        server.stop()


# ---- soak-clients: the hostile clients of scripts/soak.sh --------------

SLOW_HEAD = (b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Type: text/plain\r\n"
             b"Content-Length: 100000\r\n\r\n")


def soak_clients(argv):
    """scripts/hostile.py soak-clients --echo-port P --http-port Q
    [--nonreading 200] [--slow-body 200]: the hostile clients beside
    make soak's load, until SIGTERM or SIGINT. Non-reading clients as
    above push into the echo server until their sends block (or the TCP
    memory guard) and stay connected; slow-body clients send the head of
    a POST with a 100,000-byte body, then 1 byte of it a second. One
    answered with 408 (a body timeout) counts, closes and is replaced by
    a new one; any other answer, or a close without one, is unexpected.
    Prints "ready ..." once all are connected and pushed, and a summary
    line at the end; its exit status is 1 if anything unexpected
    happened."""
    ap = argparse.ArgumentParser(prog="scripts/hostile.py soak-clients")
    ap.add_argument("--echo-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--nonreading", type=int, default=200)
    ap.add_argument("--slow-body", type=int, default=200)
    ap.add_argument("--push-seconds", type=float, default=30.0)
    args = ap.parse_args(argv)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))

    t0 = time.monotonic()
    nr = connect_nonreading(args.echo_port, args.nonreading)
    pushed, took, why = push(nr, args.push_seconds)
    print("nonreading: %d connected, each pushed %.1f MiB (median) in %.1f s, stopped: %s"
          % (len(nr), statistics.median(pushed) / 2**20, took, why), flush=True)

    p = select.poll()
    for s in nr:
        p.register(s, select.POLLRDHUP)   # never POLLIN: they do not read
    nr_fds = {s.fileno() for s in nr}
    nr_closed = 0
    slow = {}          # fd -> [socket, bytes of body sent, answer so far, next trickle]
    counts = {"408": 0, "unexpected": 0, "connected": 0}
    unexpected = []

    def open_slow(when):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", args.http_port))
        except BlockingIOError:
            pass
        slow[s.fileno()] = [s, 0, b"", when, False]
        p.register(s, select.POLLOUT)
        counts["connected"] += 1

    def drop(fd, what):
        st = slow.pop(fd)
        p.unregister(fd)
        st[0].close()
        if what != "408":
            counts["unexpected"] += 1
            if len(unexpected) < 5:
                unexpected.append(what)
        else:
            counts["408"] += 1
        if not stop:
            open_slow(time.monotonic() + 1.0)

    now = time.monotonic()
    for i in range(args.slow_body):
        open_slow(now + i / args.slow_body)   # spread the trickle over the second
    ready = False
    while not stop:
        if not ready and all(st[4] for st in slow.values()):
            print("ready: %d non-reading, %d slow-body clients (%.1f s)"
                  % (len(nr), len(slow), time.monotonic() - t0), flush=True)
            ready = True
        now = time.monotonic()
        due = min((st[3] for st in slow.values() if st[4]), default=now + 0.1)
        try:
            evs = p.poll(max(0, min(100, (due - now) * 1000)))
        except InterruptedError:
            continue
        for fd, ev in evs:
            if fd in nr_fds:
                if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                    nr_closed += 1
                    nr_fds.discard(fd)
                    p.unregister(fd)
                continue
            st = slow.get(fd)
            if st is None:
                continue
            s = st[0]
            if not st[4]:   # connecting
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    drop(fd, "connect: " + os.strerror(err))
                    continue
                try:
                    s.send(SLOW_HEAD)
                except OSError as e:
                    drop(fd, "send: %s" % e)
                    continue
                st[4] = True
                p.modify(fd, select.POLLIN | select.POLLRDHUP)
                continue
            try:
                b = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                drop(fd, "recv: %s" % e)
                continue
            if not b:
                drop(fd, "closed without an answer" if not st[2] else
                     "answer " + st[2][:12].decode(errors="replace"))
                continue
            st[2] += b
            if b"\r\n" in st[2]:
                line = st[2].split(b"\r\n", 1)[0].decode(errors="replace")
                drop(fd, "408" if line.startswith("HTTP/1.1 408") else "answer " + line)
        now = time.monotonic()
        for fd, st in list(slow.items()):
            if st[4] and st[3] <= now:
                try:
                    st[0].send(b"x")
                    st[1] += 1
                except BlockingIOError:
                    pass
                except OSError as e:
                    drop(fd, "send: %s" % e)
                    continue
                st[3] += 1.0
    still = len(slow)
    unexpected_all = counts["unexpected"] + nr_closed
    print("summary: nonreading %d, %d closed by the server; slow-body %d at a time, %d connections, "
          "%d cut off with 408, %d still connected, %d unexpected%s"
          % (len(nr), nr_closed, args.slow_body, counts["connected"], counts["408"], still,
             counts["unexpected"], (" (" + "; ".join(unexpected) + ")") if unexpected else ""),
          flush=True)
    for s in nr:
        s.close()
    for st in slow.values():
        st[0].close()
    return 1 if unexpected_all else 0


# ---- report -----------------------------------------------------------------

def med(rows, key):
    """(median, low, high) of rows' key (a dotted path)."""
    vals = []
    for r in rows:
        v = r
        for k in key.split("."):
            v = v[k]
        vals.append(v)
    return statistics.median(vals), min(vals), max(vals)


def fmt(m, unit="", scale=1.0, prec=1, spread=True):
    mid, lo, hi = m
    s = "%.*f%s" % (prec, mid / scale, unit)
    if spread and lo != hi:
        s += " (%.*f-%.*f)" % (prec, lo / scale, prec, hi / scale)
    return s


def hw_name(hw, explicit):
    return str(hw) + ("" if explicit else " (default)")


def main():
    global verbose
    argv = sys.argv[1:]
    if argv[:1] == ["--_ping"]:
        return pinger_main(int(argv[1]))
    if argv[:1] == ["--_flood"]:
        return flood_main(int(argv[1]), int(argv[2]))
    if argv[:1] == ["soak-clients"]:
        return soak_clients(argv[1:])
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    ap = argparse.ArgumentParser(
        prog="scripts/hostile.py", add_help=False,
        usage="%(prog)s [options] [-- SERVER_OPTIONS...] (see --help)")
    ap.add_argument("--binary", default=os.path.join(REPO, "moonring"))
    ap.add_argument("--clients", default="20,80")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--push-seconds", type=float, default=8.0)
    ap.add_argument("--sndbuf", type=int, default=0)
    ap.add_argument("--high-water", default="1048576,default")
    ap.add_argument("--flooders", default="1,4")
    ap.add_argument("--only", choices=["nonreading", "flood"])
    ap.add_argument("--flood-client", choices=["auto", "loadgen", "python"], default="auto")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    verbose = args.verbose
    args.clients = [int(x) for x in args.clients.split(",")]
    if len(args.clients) != 2 or not 0 < args.clients[0] < args.clients[1]:
        ap.error("--clients takes N1,N2 with 0 < N1 < N2")
    flooders = [int(x) for x in args.flooders.split(",")]
    if args.flood_client == "auto":
        args.flood_client = "loadgen" if os.access(LOADGEN, os.X_OK) else "python"
    elif args.flood_client == "loadgen" and not os.access(LOADGEN, os.X_OK):
        die("no %s (make build/loadgen)" % LOADGEN)
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        die("no server binary at %s (run make)" % binary)

    # the high-water settings: from the server options, or the list
    settings = []   # (value, explicit, server options)
    given = opt_value(extra, "--high-water", None)
    if given is not None:
        settings.append((int(given), True, extra))
    else:
        for v in args.high_water.split(","):
            if v == "default":
                settings.append((DEFAULT_HIGH_WATER, False, extra))
            else:
                settings.append((int(v), True, extra + ["--high-water", v]))

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {args.client_cpu})   # and so the children

    t_all = time.monotonic()
    nr = {i: [] for i in range(len(settings))}
    fl = {(i, f): [] for i in range(len(settings)) for f in flooders}
    for rep in range(args.repeat):
        for i, (hw, explicit, opts) in enumerate(settings):
            if args.only != "flood":
                r = run_nonreading(args, binary, opts, hw)
                nr[i].append(r)
                log("round %d, high-water %d: slope %.0f B/client, ping p99 %.2f ms (%.0f s)"
                    % (rep + 1, hw, r["slope"], r["ping"]["p99"], r["seconds"]))
                if verbose:
                    log("  smaps growth %d->%d clients (KiB): %s" % (
                        args.clients[0], args.clients[1], r["growth"]))
                    log("  smaps growth base->%d clients (KiB): %s" % (args.clients[0], r["growth_base"]))
                    log("  stats: " + r["stats"])
            if args.only != "nonreading":
                for r in run_flood(args, binary, opts, hw, flooders):
                    f = r["flooders"]
                    fl[(i, f)].append(r)
                    log("round %d, high-water %d, %d flooder(s): ping p99 %.2f ms, %.0f MiB/s (%.0f s)"
                        % (rep + 1, hw, f, r["ping"]["p99"], r["flood_mib_s"], r["seconds"]))
                    if verbose:
                        log("  stats: " + r["stats"])

    failed = []
    rounds = "median of %d rounds (lowest-highest)" % args.repeat if args.repeat > 1 else "1 round"
    print("hostile: %s, %s; server on CPU %d, clients on CPU %d"
          % (os.path.relpath(binary, os.getcwd()), rounds, args.server_cpu, args.client_cpu))
    if extra:
        print("server options: " + " ".join(extra))
    if args.only != "flood":
        n1, n2 = args.clients
        print()
        print("Non-reading clients (SO_RCVBUF 4096, 64 KiB writes until blocked, never read): the")
        print("server's VmRSS, its receive pool warmed up and included; slope = growth per client")
        print("from %d to %d clients; bound = 1.25 x high-water + 64 KiB; ping every 10 ms (ms)" % (n1, n2))
        print()
        hdr = ("high-water", "RSS MiB: base/%d/%d" % (n1, n2), "slope KiB/client", "x hw",
               "bound KiB", "ok", "ping p50", "p99", "max", "ok")
        rows = []
        for i, (hw, explicit, _) in enumerate(settings):
            rs = nr[i]
            slope = med(rs, "slope")
            p99 = med(rs, "ping.p99")
            if slope[0] > bound_of(hw):
                failed.append("high-water %d: slope %.0f B > bound %.0f B" % (hw, slope[0], bound_of(hw)))
            if p99[0] >= P99_LIMIT_MS:
                failed.append("high-water %d: ping p99 %.2f ms with non-reading clients" % (hw, p99[0]))
            rss = "/".join("%.1f" % (med(rs, k)[0] / 1024) for k in ("rss_base_kib", "rss1_kib", "rss2_kib"))
            rows.append((hw_name(hw, explicit), rss, fmt(slope, scale=1024, prec=0),
                         "%.2f" % (slope[0] / hw), "%.0f" % (bound_of(hw) / 1024),
                         "yes" if slope[0] <= bound_of(hw) else "NO",
                         fmt(med(rs, "ping.p50"), prec=2, spread=False),
                         fmt(p99, prec=1), fmt(med(rs, "ping.max"), prec=0),
                         "yes" if p99[0] < P99_LIMIT_MS else "NO"))
        table(hdr, rows)
        print()
        for i, (hw, explicit, _) in enumerate(settings):
            rs = nr[i]
            print("  high-water %d: each client wrote %s MiB before its sends blocked; the first %d cost"
                  % (hw, fmt(med(rs, "pushed_mib"), prec=1, spread=False), n1))
            print("    %s KiB each from the base; peak TCP memory (the machine's) %s MiB; idle ping p99"
                  % (fmt(med(rs, "per_client_from_base"), scale=1024, prec=0, spread=False),
                     fmt(med(rs, "peak_tcp_mem_mib"), prec=0, spread=False)))
            print("    %s ms; pings lost %d; %s s per round"
                  % (fmt(med(rs, "ping_idle.p99"), prec=2, spread=False),
                     sum(r["ping"]["lost"] for r in rs), fmt(med(rs, "seconds"), prec=0, spread=False)))
            stops = sorted({w for r in rs for w in r["push_stop"]} - {"blocked"})
            if stops:
                print("    note: in some round pushing stopped before the sends blocked (%s)" % ", ".join(stops))
            if not all(r["settled"] for r in rs):
                print("    note: in some round RSS had not stopped growing after 15 s")
    if args.only != "nonreading":
        print()
        how = ("build/loadgen, 64 KiB messages, 4 in flight each" if args.flood_client == "loadgen"
               else "this script, 64 KiB writes, 256 KiB in flight each")
        print("Flood fairness: F connections echo flat out and read everything back (%s)," % how)
        print("for %g s each; a separate client pings every 10 ms (ms)" % args.seconds)
        print()
        hdr = ("high-water", "flooders", "MiB/s echoed", "ping p50", "p99", "max", "idle p99", "ok")
        # the idle p99 is the noise floor: the same server, 2 s before any flooder
        rows = []
        for i, (hw, explicit, _) in enumerate(settings):
            for f in flooders:
                rs = fl[(i, f)]
                p99 = med(rs, "ping.p99")
                if p99[0] >= P99_LIMIT_MS:
                    failed.append("high-water %d, %d flooder(s): ping p99 %.2f ms" % (hw, f, p99[0]))
                rows.append((hw_name(hw, explicit), str(f), fmt(med(rs, "flood_mib_s"), prec=0),
                             fmt(med(rs, "ping.p50"), prec=2), fmt(p99, prec=2),
                             fmt(med(rs, "ping.max"), prec=1), fmt(med(rs, "ping_idle.p99"), prec=2, spread=False),
                             "yes" if p99[0] < P99_LIMIT_MS else "NO"))
        table(hdr, rows)
    print()
    print("bounds: slope <= 1.25 x high-water + 64 KiB; ping p99 < %g ms (checked with --check)" % P99_LIMIT_MS)
    print("took %.0f s" % (time.monotonic() - t_all))
    for f in failed:
        print("over: " + f)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": [s[:2] for s in settings], "nonreading": nr,
                       "flood": {"%d:%d" % k: v for k, v in fl.items()}}, fh, indent=1, default=str)
    if args.check and failed:
        return 1
    return 0


def table(hdr, rows):
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    line = lambda cells: "  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(cells))
    print(line(hdr))
    print(line(["-" * x for x in w]))
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    sys.exit(main())
