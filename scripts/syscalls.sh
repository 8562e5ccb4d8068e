#!/usr/bin/env bash
# The classic measurement: 1,000 short-lived clients, 50 at a time, each
# connecting, sending one message, reading the echo and closing, with the
# server traced by `strace -c -f`. Prints the server's io_uring_enter calls
# and its total syscalls for the whole workload.
#
# usage: scripts/syscalls.sh [CLIENTS [CONCURRENCY]] [-- SERVER COMMAND...]
#   default server: ./moonring (the built-in echo)
#   the server command gets the port through $PORT
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${1:-1000}
conc=${2:-50}
shift $(( $# > 2 ? 2 : $# )) || true
[ "${1:-}" = "--" ] && shift

command -v strace >/dev/null || scripts/deps.sh bench >/dev/null
make --no-print-directory -s moonring build/loadgen >/dev/null

port=$(( 10000 + RANDOM % 20000 )) # below the ephemeral range
export PORT=$port
if [ $# -gt 0 ]; then
  "$@" & server=$!
else
  taskset -c 0 ./moonring -p "$port" --log-level warn & server=$!
fi
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT

# wait until it accepts
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.05
done
sleep 0.2 # let the probe connection's close settle before tracing

# measure MODE: trace the server while the clients run; print one row
measure() {
  local out; out=$(mktemp)
  taskset -c 1 strace -c -f -q -o "$out" -p "$server" & local tracer=$!
  sleep 0.5 # strace needs a moment to attach
  taskset -c 1 build/loadgen -p "$port" --churn "$clients" -c "$conc" -s 64 $2 >/dev/null
  sleep 0.5 # the last closes complete in the server
  kill -INT $tracer
  wait $tracer 2>/dev/null || true
  local enters total
  enters=$(awk '$NF == "io_uring_enter" {print $4}' "$out")
  total=$(awk '$NF == "total" {print $4}' "$out")
  printf '| %-34s | %14s | %15s |\n' "$1" "${enters:-0}" "${total:-0}"
  [ -n "${VERBOSE:-}" ] && sed 's/^/    /' "$out" >&2
  rm -f "$out"
}

echo "$clients clients, $conc at a time, 64-byte messages; server syscalls:"
echo
echo "| clients                            | io_uring_enter | syscalls in all |"
echo "|------------------------------------|----------------|-----------------|"
measure "in waves of $conc" --waves
measure "$conc in flight, replaced as they end" ""
