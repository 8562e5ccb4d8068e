#!/usr/bin/env bash
# User-space instructions per request of the built-in echo, counted by
# callgrind. Unlike requests/s, the count hardly depends on the machine or
# on what else runs on it, so it shows small changes to the request path.
# Kernel work (the io_uring syscalls themselves) is not counted.
#
# It does depend, though, on how the 50 connections' requests fall into
# ring iterations, each of which has its cost. With the clients on a core of
# their own, that grouping comes from the race between the two cores and
# shifts with the machine's speed of the moment, and the count by 1-2%
# with it. So the clients share the server's core by default: the two
# take turns, and the grouping stays the same however fast the machine
# runs. The syscalls per request (under valgrind, an io_uring_enter and a
# clock_gettime per iteration) are printed too, so that a change in
# batching can be told from one in the code.
#
# usage: scripts/instructions.sh    settings from the environment, with their defaults:
#   MOONRING=./moonring LOADGEN=build/loadgen ROUNDS=3 SECS=5
#   SCRIPT= (an echo script to serve instead of the built-in one)
#   SCPU=0 CCPU=$SCPU (server core, client core)
set -euo pipefail

MOONRING=${MOONRING:-./moonring}
LOADGEN=${LOADGEN:-build/loadgen}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}              # measured seconds per round
SCPU=${SCPU:-0}
CCPU=${CCPU:-$SCPU}
for b in "$MOONRING" "$LOADGEN"; do
  [ -x "$b" ] || { echo "instructions: $b: not built" >&2; exit 1; }
done
command -v callgrind_control >/dev/null || { echo "instructions: needs valgrind" >&2; exit 1; }

tmp=$(mktemp -d)
server=
stop() { # SIGTERM lets callgrind write its counts; SIGKILL if it hangs
  [ -n "$server" ] || return 0
  kill "$server" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
}
trap 'stop; rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM       # so that the EXIT trap stops the server

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 10000))   # below the ephemeral range
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

load() { # load PORT DEPTH SECS
  taskset -c "$CCPU" "$LOADGEN" -p "$1" -c 50 -s 64 -P "$2" -d "$3" -W 0
}

# measure DEPTH: one round on a fresh server (a long-lived one drifts as
# its Lua heap ages); sets $fig and $sys
measure() {
  local port out=$tmp/callgrind.out rate ir= nsys=
  port=$(free_port)
  rm -f "$out"
  # --instr-atstart=no rather than --collect-atstart=no: `callgrind_control
  # -i` switches instrumentation, and with collection off it would count 0
  taskset -c "$SCPU" valgrind --tool=callgrind --instr-atstart=no --collect-systime=yes \
    --callgrind-out-file="$out" "$MOONRING" -p "$port" --no-reload \
    --log-level warn ${SCRIPT:+"$SCRIPT"} >>"$tmp/server.log" 2>&1 & server=$!
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
    sleep 0.1
  done
  load "$port" "$1" 1 >/dev/null   # warm-up: JIT traces, buffers, allocator
  callgrind_control -i on "$server" >>"$tmp/server.log" 2>&1
  rate=$(load "$port" "$1" "$SECS" | awk '$1 == "requests/s" {print $2}')
  callgrind_control -i off "$server" >>"$tmp/server.log" 2>&1
  stop
  # the totals line, not "summary:", which reads 0 with --instr-atstart=no
  read -r ir nsys _ < <(awk '$1 == "totals:" {print $2, $3}' "$out" 2>/dev/null) || true
  [ -n "$ir" ] && [ -n "$rate" ] && [ "$rate" != 0 ] ||
    { echo "instructions: no counts; server log:" >&2; cat "$tmp/server.log" >&2; exit 1; }
  # loadgen prints a rate over SECS, not a count: requests = rate * SECS
  # (its own measured interval exceeds SECS by a few ms at most)
  fig=$(awk -v ir="$ir" -v r="$rate" -v s="$SECS" 'BEGIN {printf "%.1f", ir / (r * s)}')
  sys=$(awk -v n="$nsys" -v r="$rate" -v s="$SECS" 'BEGIN {printf "%.2f", 1000 * n / (r * s)}')
}

# summary V...: the median and the spread (max - min) relative to it
summary() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "median %.2f  spread %.2f%%", m, (v[NR] - v[1]) / m * 100 }'
}

workload() { # workload NAME DEPTH
  local figs=() syss=() r
  for r in $(seq "$ROUNDS"); do
    measure "$2"
    figs+=("$fig") syss+=("$sys")
  done
  printf '%-15s %s  %s  instructions per request\n' "$1:" "${figs[*]}" "$(summary "${figs[@]}")"
  printf '%-15s %s  %s  syscalls per 1000 requests\n' "" "${syss[*]}" "$(summary "${syss[@]}")"
}

workload "64 B echo" 1
workload "pipelined echo" 16
