#!/usr/bin/env bash
# make soak: 10,000 connections echoing while 50 more at a time churn
# (connect, echo, close), for SOAK_SECONDS (default 180). Reports the
# server's RSS after warm-up and at the end, and the errors, which must
# be 0; RSS must not grow.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECONDS:-180}
conns=${SOAK_CONNS:-10000}
make --no-print-directory -s moonring build/loadgen
port=$(( 20000 + RANDOM % 20000 ))
./moonring -p "$port" --log-level warn & server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
rss() { awk '/VmRSS/ {print $2}' /proc/$server/status; }

build/loadgen -p "$port" -c "$conns" -s 64 -d "$secs" -W 10 > /tmp/soak-echo.$$ 2>&1 & echo_pid=$!
sleep 12
rss_start=$(rss)
churn_errors=0; churned=0
end=$(( $(date +%s) + secs - 12 ))
while [ "$(date +%s)" -lt "$end" ]; do
  out=$(build/loadgen -p "$port" --churn 1000 -c 50 -s 64 2>&1) || true
  churned=$(( churned + 1000 ))
  e=$(echo "$out" | awk '{for (i=1;i<NF;i++) if ($i=="errors") print $(i+1)}')
  churn_errors=$(( churn_errors + ${e:-1} ))
done
rss_end=$(rss)
wait $echo_pid || true
echo_line=$(tail -1 /tmp/soak-echo.$$); rm -f /tmp/soak-echo.$$
echo_errors=$(echo "$echo_line" | awk '{for (i=1;i<NF;i++) if ($i=="errors") print $(i+1)}')
echo "soak: ${secs}s, $conns connections echoing, $churned short-lived clients"
echo "echo:  $echo_line"
echo "churn: $churned clients, $churn_errors errors"
echo "RSS:   ${rss_start} KiB after warm-up, ${rss_end} KiB at the end"
errors=$(( ${echo_errors:-1} + churn_errors ))
echo "errors: $errors"
[ "$errors" -eq 0 ] && [ "$rss_end" -le $(( rss_start + rss_start / 10 + 1024 )) ]
