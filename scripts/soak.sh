#!/usr/bin/env bash
# make soak: 10,000 connections echoing while 50 more at a time churn
# (connect, echo, close), for SOAK_SECONDS (default 180). Reports the
# server's RSS after warm-up, a third in and at the end, and the errors,
# which must be 0; from a third in to the end RSS must not grow (by more
# than 10% and 1 MiB of noise).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECONDS:-180}
conns=${SOAK_CONNS:-10000}
make --no-print-directory -s moonring build/loadgen
port=$(( 20000 + RANDOM % 12000 )) # below the ephemeral range (32768-)
./moonring -p "$port" --log-level ${SOAK_LOG:-warn} & server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
# RSS without the receive-buffer pool (one mapping of --buffers x
# --buffer-size, 16 MiB by default): its pages become resident as the
# kernel first fills them, a fixed cost that would blur a leak.
pool_kb=$(( 1024 * 16384 / 1024 ))
rss() {
  awk -v pool="$pool_kb" '
    /^Size:/ { size = $2 }
    /^Rss:/ { if (size != pool) total += $2 }
    END { print total }' /proc/$server/smaps
}

build/loadgen -p "$port" -c "$conns" -s 64 -d "$secs" -W 10 > /tmp/soak-echo.$$ 2>&1 & echo_pid=$!
sleep 8
# the warm-up churns too: the slots, tables and caches that churning
# clients use are part of the steady state
build/loadgen -p "$port" --churn 3000 -c 50 -s 64 >/dev/null 2>&1 || true
sleep 2
rss_start=$(rss)
kill -USR1 $server
churn_errors=0; churned=0
end=$(( $(date +%s) + secs - 12 ))
third=$(( $(date +%s) + (secs - 12) / 3 ))
rss_mid=
while [ "$(date +%s)" -lt "$end" ]; do
  if [ -z "$rss_mid" ] && [ "$(date +%s)" -ge "$third" ]; then rss_mid=$(rss); fi
  out=$(build/loadgen -p "$port" --churn 1000 -c 50 -s 64 2>&1) || true
  churned=$(( churned + 1000 ))
  e=$(echo "$out" | awk '{for (i=1;i<NF;i++) if ($i=="errors") print $(i+1)}')
  churn_errors=$(( churn_errors + ${e:-1} ))
done
rss_end=$(rss)
kill -USR1 $server
wait $echo_pid || true
echo_line=$(tail -1 /tmp/soak-echo.$$); rm -f /tmp/soak-echo.$$
echo_errors=$(echo "$echo_line" | awk '{for (i=1;i<NF;i++) if ($i=="errors") print $(i+1)}')
echo "soak: ${secs}s, $conns connections echoing, $churned short-lived clients"
echo "echo:  $echo_line"
echo "churn: $churned clients, $churn_errors errors"
rss_mid=${rss_mid:-$rss_start}
echo "RSS:   ${rss_start} KiB after warm-up, ${rss_mid} KiB a third in, ${rss_end} KiB at the end"
echo "       (without the receive pool; malloc keeps the high-water mark of the"
echo "       output queues, so RSS climbs while load peaks, then levels off)"
errors=$(( ${echo_errors:-1} + churn_errors ))
echo "errors: $errors"
# from a third in to the end, RSS must not grow (10% and 1 MiB of noise)
[ "$errors" -eq 0 ] && [ "$rss_end" -le $(( rss_mid + rss_mid / 10 + 1024 )) ]
