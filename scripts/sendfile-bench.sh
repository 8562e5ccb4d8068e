#!/bin/sh
# sendfile-bench.sh - sock:send_file's two ways, side by side: reads
# through the ring into the send queue (the default) and splice
# file -> pipe -> socket. One connection asks for a file again and
# again (a 1 MiB and a 4 KiB one, both in the page cache) for SECS
# seconds each; the server runs on CPU 0, the client on CPU 1. Prints
# bytes/s, files/s and the server's CPU (user + system, from
# /proc/PID/stat) per way and size.
#   scripts/sendfile-bench.sh [SECS] [ROUNDS]   (MR_OPTS: more server options)
set -eu
BIN=${MOONRING_BIN:-./moonring}
SECS=${1:-3}
ROUNDS=${2:-1}
DIR=$(mktemp -d /tmp/mr-sendfile-XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT INT TERM
head -c 1048576 /dev/urandom > "$DIR/1m"
head -c 4096 /dev/urandom > "$DIR/4k"
cat > "$DIR/app.lua" <<'LUA'
return function(sock)
  while true do
    local line = sock:receive('*l')
    if not line then return end
    local mode, path = line:match('^(%S+) (%S+)$')
    local n, err = sock:send_file(path, 0, nil, mode == 'splice' and { splice = true } or nil)
    if not n then sock:send('err ', err) return end
  end
end
LUA
cat > "$DIR/client.py" <<'PY'
import os, socket, sys, time
port, mode, path, secs, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
size = os.path.getsize(path)
req = ('%s %s\n' % (mode, path)).encode()
s = socket.create_connection(('127.0.0.1', port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(1 << 20)
view = memoryview(buf)
def cpu():
    f = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
files = 0
c0, t0 = cpu(), time.time()
while time.time() - t0 < secs:
    s.sendall(req)
    left = size
    while left:
        n = s.recv_into(view, min(left, len(buf)))
        if not n: sys.exit('closed')
        left -= n
    files += 1
t = time.time() - t0
c = cpu() - c0
print('%-7s %5s  %9.1f MiB/s  %8.0f files/s  server CPU %3.0f%%  %.2f us/file' %
      (mode, 'x' + str(size), files * size / t / 2**20, files / t, 100 * c / t, 1e6 * c / files))
PY
taskset -c 0 "$BIN" -p 0 --no-reload ${MR_OPTS:-} "$DIR/app.lua" 2> "$DIR/log" &
PID=$!
for i in $(seq 50); do grep -q 'listening on' "$DIR/log" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$DIR/log" | grep -o '[0-9]*$')
for r in $(seq "$ROUNDS"); do
  for f in 1m 4k; do
    for mode in read splice; do
      taskset -c 1 python3 "$DIR/client.py" "$PORT" "$mode" "$DIR/$f" "$SECS" "$PID"
    done
  done
done
