#!/usr/bin/env bash
# make soak: 10,000 connections echoing while 50 more at a time churn
# (connect, echo, close), for SOAK_SECONDS (default 180). Reports the
# server's RSS after warm-up, a third in and at the end, and the errors,
# which must be 0; from a third in to the end RSS must not grow (by more
# than 10% and 1 MiB of noise).
#
# Hostile clients (SOAK_HOSTILE=1, the default; SOAK_HOSTILE=0 leaves
# them out): once the warm-up's RSS is taken, 200 non-reading clients
# (SO_RCVBUF 4096, writing 64 KiB at a time until their sends block,
# never reading) join the echo load, and 200 slow-body clients trickle a
# POST body at 1 byte a second into examples/http.lua, served by a second
# moonring on another port. All of it runs beside the load above, which
# must still see no error. The echo server's RSS, sampled throughout,
# must stay under the warm-up's plus 200 x (1.25 x high-water + 64 KiB)
# (high-water: SOAK_HIGH_WATER, passed to the echo server, else its
# default of 64 KiB). A slow-body client cut off with 408 (a body timeout)
# is counted and replaced; one still connected at the end is fine;
# anything else is an error, and so is a non-reading client closed by
# the server. The clients are scripts/hostile.py soak-clients.
#
# RSS is all of the server's (VmRSS): the receive-buffer pool (16 MiB by
# default) cannot be told apart, as the kernel merges its mapping with
# the ones next to it, so the warm-up makes all of it resident first.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECONDS:-180}
conns=${SOAK_CONNS:-10000}
hostile=${SOAK_HOSTILE:-1}
hw=${SOAK_HIGH_WATER:-}
nonreading=200 slowbody=200
make --no-print-directory -s moonring build/loadgen
port=$(( 20000 + RANDOM % 12000 )) # below the ephemeral range (32768-)
hport=$(( port + 1 ))
hwopt=(); [ -z "$hw" ] || hwopt=(--high-water "$hw")
./moonring -p "$port" --log-level ${SOAK_LOG:-warn} "${hwopt[@]}" & server=$!
hserver= hpid=
tmp=$(mktemp -d)
cleanup() {
  [ -z "$hpid" ] || kill "$hpid" 2>/dev/null || true
  [ -z "$hserver" ] || kill "$hserver" 2>/dev/null || true
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
  [ -z "$hserver" ] || wait "$hserver" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
if [ "$hostile" = 1 ]; then
  ./moonring -p "$hport" --log-level ${SOAK_LOG:-warn} examples/http.lua & hserver=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$hport) 2>/dev/null && break; sleep 0.05; done
fi
rss() { awk '/^VmRSS:/ { print $2 }' /proc/$1/status; }
rss_peak=0
sample() { local r; r=$(rss $server); [ "$r" -le "$rss_peak" ] || rss_peak=$r; }

build/loadgen -p "$port" -c "$conns" -s 64 -d "$secs" -W 10 > $tmp/echo 2>&1 & echo_pid=$!
sleep 8
# the warm-up churns too: the slots, tables and caches that churning
# clients use are part of the steady state; and 64 KiB messages make the
# whole receive pool resident
build/loadgen -p "$port" --churn 3000 -c 50 -s 64 >/dev/null 2>&1 || true
build/loadgen -p "$port" -c 1 -s 65536 -P 4 -d 1 -W 0 >/dev/null 2>&1 || true
sleep 2
rss_start=$(rss $server)
kill -USR1 $server
end=$(( $(date +%s) + secs - 12 ))
if [ "$hostile" = 1 ]; then
  python3 scripts/hostile.py soak-clients --echo-port "$port" --http-port "$hport" \
    --nonreading $nonreading --slow-body $slowbody > $tmp/hostile 2>&1 & hpid=$!
  for _ in $(seq 600); do   # up to a minute for their sends to block
    grep -q '^ready' $tmp/hostile && break
    kill -0 $hpid 2>/dev/null || break
    sample; sleep 0.1
  done
  grep -q '^ready' $tmp/hostile || { echo "soak: the hostile clients did not start:"; cat $tmp/hostile; exit 1; }
fi
churn_errors=0; churned=0
third=$(( $(date +%s) + (end - $(date +%s)) / 3 ))
rss_mid=
while [ "$(date +%s)" -lt "$end" ]; do
  if [ -z "$rss_mid" ] && [ "$(date +%s)" -ge "$third" ]; then rss_mid=$(rss $server); fi
  sample
  out=$(build/loadgen -p "$port" --churn 1000 -c 50 -s 64 2>&1) || true
  churned=$(( churned + 1000 ))
  e=$(echo "$out" | awk '{for (i=1;i<NF;i++) if ($i=="errors") print $(i+1)}')
  churn_errors=$(( churn_errors + ${e:-1} ))
done
sample
rss_end=$(rss $server)
kill -USR1 $server
hostile_errors=0
if [ "$hostile" = 1 ]; then
  hrss=$(rss $hserver)
  kill -TERM $hpid
  wait $hpid || hostile_errors=1
  hpid=
fi
wait $echo_pid || true
echo_line=$(tail -1 $tmp/echo)
echo_errors=$(echo "$echo_line" | awk '{for (i=1;i<NF;i++) if ($i=="errors") print $(i+1)}')
echo "soak: ${secs}s, $conns connections echoing, $churned short-lived clients"
echo "echo:  $echo_line"
echo "churn: $churned clients, $churn_errors errors"
rss_mid=${rss_mid:-$rss_start}
echo "RSS:   ${rss_start} KiB after warm-up, ${rss_mid} KiB a third in, ${rss_end} KiB at the end"
echo "       (all of it, the receive pool included; malloc keeps the high-water"
echo "       mark of the output queues, so RSS climbs while load peaks, then levels off)"
bound_ok=1
if [ "$hostile" = 1 ]; then
  bound=$(awk -v s="$rss_start" -v hw="${hw:-65536}" -v n=$nonreading \
    'BEGIN { printf "%d", s + n * (1.25 * hw + 65536) / 1024 }')
  sed 's/^/hostile: /' $tmp/hostile
  echo "hostile: echo server RSS peak ${rss_peak} KiB, bound ${bound} KiB" \
       "(${rss_start} + $nonreading x (1.25 x ${hw:-65536} + 64 KiB));" \
       "HTTP server RSS ${hrss} KiB at the end"
  [ "$rss_peak" -le "$bound" ] || { bound_ok=0; echo "hostile: RSS over the bound"; }
fi
errors=$(( ${echo_errors:-1} + churn_errors + hostile_errors ))
echo "errors: $errors"
# from a third in to the end, RSS must not grow (10% and 1 MiB of noise)
[ "$errors" -eq 0 ] && [ "$bound_ok" = 1 ] && [ "$rss_end" -le $(( rss_mid + rss_mid / 10 + 1024 )) ]
