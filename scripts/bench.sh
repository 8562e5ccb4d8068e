#!/usr/bin/env bash
# make bench: moonring side by side with its peers, in one run.
#
# Each workload runs every server in turn, ROUNDS times, in an order that
# rotates from round to round; the table gives medians, because on a
# shared 2-core machine figures drift from one run to the next. Servers
# run on core 0, load generators on core 1. The table is printed and
# written to BENCHMARKS.md between its bench markers, with the machine,
# the versions and the exact commands; the rest of that file is prose.
#
# usage: scripts/bench.sh    settings from the environment, with their defaults:
#   ROUNDS=5 SECS=3 WRK_SECS=10 IDLE_CONNS=10000 SHARED_N=2000000 MIXED_MB=1024 MIXED_RATE=10000 MIXED_LIMIT=100M
#   ONLY="echo http https tls hits redis churn idle udp shared files mixed aof"
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}          # alternating rounds; medians are reported
SECS=${SECS:-3}              # seconds per echo measurement, after 1 s of warm-up
WRK_SECS=${WRK_SECS:-10}     # seconds per wrk measurement
IDLE_CONNS=${IDLE_CONNS:-10000}
SHARED_N=${SHARED_N:-2000000} # gets or sets per loop of the shared workload
MIXED_MB=${MIXED_MB:-1024}  # the uncached download of the mixed workload
MIXED_RATE=${MIXED_RATE:-10000} # its echo messages per second
MIXED_LIMIT=${MIXED_LIMIT:-100M} # its download's rate (curl --limit-rate)
ALL="echo http https tls hits redis churn idle udp shared files mixed aof"
ONLY=${ONLY:-$ALL}           # which workloads
OUT=${OUT:-BENCHMARKS.md}
SCPU=0 CCPU=1                # server core, client core
PORT=17300

scripts/deps.sh bench
make --no-print-directory -s moonring build/loadgen build/epoll_echo build/udpgen build/udp_echo
ulimit -n "$(ulimit -Hn)"    # 10,000 idle connections need the hard limit

work=$(mktemp -d)
log=$work/servers.log
pid=
skipped=()                   # peers left out, with the reason
: >"$work/commands"          # every distinct command, for BENCHMARKS.md

stop() {
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}
rpid=                        # the redis-server behind the hits workload
trap 'stop; [ -z "$rpid" ] || kill "$rpid" 2>/dev/null; rm -rf "$work"' EXIT

current=                     # the workload running, whose commands these are
note_cmd() { # remember a command line once (a file: clients run in $(...))
  local w c= f
  for w in "$@"; do
    case $w in ''|*[!-A-Za-z0-9_./:=,\$]*) w=${w@Q} ;; esac
    c+="${c:+ }$w"
  done
  for f in "$work/commands" "$work/commands.$current"; do
    grep -qxsF -- "$c" "$f" || echo "$c" >>"$f"
  done
}

# start CMD...: start a server on the server core, listening on $PORT, and
# wait until it accepts. Each start takes a fresh port so that no server
# meets another's connections in TIME_WAIT.
start() {
  PORT=$((PORT + 1))
  local argv=("${@//\$PORT/$PORT}")
  note_cmd taskset -c $SCPU "$@"
  taskset -c $SCPU "${argv[@]}" >>"$log" 2>&1 & pid=$!
  for _ in $(seq 200); do
    "$ready" "$PORT" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: '$*' did not start ($ready); its output:" >&2
  tail -20 "$log" >&2
  exit 1
}
ready=tcp_ready              # how start knows the server is up
tcp_ready() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

nginx_worker() { pgrep -P "$pid" | head -1; }   # it holds the connections

client() { # run a load generator on the client core
  note_cmd taskset -c $CCPU "$@"
  local argv=("${@//\$PORT/$PORT}")
  argv=("${argv[@]//\$PID/$pid}")
  [[ "${argv[*]}" != *'$WORKER'* ]] || argv=("${argv[@]//\$WORKER/$(nginx_worker)}")
  taskset -c $CCPU "${argv[@]}"
}

record() { echo "$2" >>"$work/$1"; }   # record KEY VALUE
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # CPU time, in clock ticks
# cpu_per_req PID TICKS_BEFORE REQUESTS: the server's CPU µs per request
cpu_per_req() {
  awk -v t0="$2" -v t1="$(ticks "$1")" -v hz="$(getconf CLK_TCK)" -v n="$3" \
    'BEGIN { printf "%.2f", (t1 - t0) * 1e6 / hz / n }'
}
# wrk_record KEY SERVER_PID ERRORS ARGS...: wrk -t1 -c50 for WRK_SECS with
# ARGS; fails if its output matches the grep pattern ERRORS, else records
# KEY.rps, KEY.cpu (the server's CPU µs per request) and KEY.wrk (wrk's:
# when it nears 1e6 / requests/s, wrk's core is what limits the rate)
wrk_record() {
  local key=$1 spid=$2 bad=$3 out t0 n wt; shift 3
  t0=$(ticks "$spid")
  out=$( { TIMEFORMAT='%U %S'; time client wrk -t1 -c50 -d"${WRK_SECS}s" "$@"; } \
         2>"$work/wrk.time")
  if grep -q "$bad" <<<"$out"; then
    echo "bench: $key: errors: $out" >&2; exit 1
  fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  wt=$(tail -n1 "$work/wrk.time")
  record "$key.rps" "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  record "$key.cpu" "$(cpu_per_req "$spid" "$t0" "$n")"
  record "$key.wrk" "$(awk -v n="$n" '{ printf "%.2f", ($1 + $2) * 1e6 / n }' <<<"$wt")"
}
median() { # median KEY: the median of the values recorded under KEY, or -
  [ -s "$work/$1" ] || { echo -; return; }
  sort -g "$work/$1" | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
rotate() { # rotate N WORDS...: the words, starting from the Nth
  local n=$(($1 % ($# - 1))); shift
  echo "${@:n+1}" "${@:1:n}"
}

# ---- peers ---------------------------------------------------------------

peer_ok() { # peer_ok NAME PACKAGE...: install a peer, or skip it with a note
  local name=$1; shift
  if ! scripts/deps.sh only "$@" >"$work/deps.log" 2>&1; then
    skipped+=("$name: could not install $* ($(tail -1 "$work/deps.log"))")
    return 1
  fi
}
have_tarantool=0 have_nginx=0 have_stream=0
peer_ok tarantool tarantool && have_tarantool=1
peer_ok nginx nginx libnginx-mod-http-lua && have_nginx=1
[ $have_nginx = 0 ] || { peer_ok nginx-stream libnginx-mod-stream && have_stream=1; }
have_dnsperf=0
[[ " $ONLY " != *" udp "* ]] || { peer_ok dnsperf dnsperf && have_dnsperf=1; }

nginx_head() { # nginx_head NAME MODULE...: one worker in the foreground
  local name=$1 m; shift
  for m in "$@"; do echo "load_module /usr/lib/nginx/modules/$m.so;"; done
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $work/nginx/$name.pid;
error_log $work/nginx/logs/error.log error;
events { worker_connections 19000; }
EOF
}

nginx_conf() { # a one-worker nginx serving / statically and /lua from Lua
  mkdir -p "$work/nginx/logs"
  { nginx_head nginx ndk_http_module ngx_http_lua_module; cat <<EOF
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type text/plain;
  server {
    listen 127.0.0.1:\$PORT reuseport;
    location = / { return 200 "hello from moonring\n"; }
    location = /lua { content_by_lua_block { ngx.print("hello from moonring\n") } }
  }
}
EOF
  } >"$work/nginx/nginx.conf"
}
start_nginx() { # nginx's listen port is in its configuration
  sed "s/\\\$PORT/$((PORT + 1))/" "$work/nginx/nginx.conf" >"$work/nginx/run.conf"
  start nginx -p "$work/nginx" -c "$work/nginx/run.conf"
}

start_echo() { # start_echo moonring|moonring-seq|epoll|tarantool
  case $1 in
    moonring)  start ./moonring -p '$PORT' --log-level warn ;;
    moonring-seq) start ./moonring -p '$PORT' --log-level warn examples/echo_seq.lua ;;
    epoll)     start build/epoll_echo '$PORT' ;;
    tarantool) start tarantool tests/bench/tarantool_echo.lua '$PORT' ;;
  esac
}

# ---- workloads -----------------------------------------------------------

# 1. Echo, 50 connections: 64 B, 4 KiB, 64 B pipelined 16 deep. Every byte
# is verified; loadgen reads the server's CPU time from /proc.
echo_loads=("64:-s 64" "4k:-s 4096" "p16:-s 64 -P 16")
bench_echo() {
  local servers=(moonring moonring-seq epoll) r s l out
  [ $have_tarantool = 1 ] && servers+=(tarantool)
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" "${servers[@]}"); do
      start_echo "$s"
      for l in "${echo_loads[@]}"; do
        # shellcheck disable=SC2086
        out=$(client build/loadgen -p '$PORT' -c 50 ${l#*:} -d "$SECS" -W 1 -S '$PID')
        set -- $out
        [ "${12}" = 0 ] || { echo "bench: $s echo ${l%%:*}: $out" >&2; exit 1; }
        record "echo.${l%%:*}.$s.rps" "$2"
        record "echo.${l%%:*}.$s.cpu" "${10}"
      done
      stop
    done
    echo "bench: echo round $r of $ROUNDS done" >&2
  done
}

# 2. HTTP hello, wrk -t1 -c50: examples/http.lua, nginx static, nginx+Lua.
bench_http() {
  local servers=(moonring moonring-bw) r s url spid
  [ $have_nginx = 1 ] && { nginx_conf; servers+=(nginx nginx-lua); }
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" "${servers[@]}"); do
      url='http://127.0.0.1:$PORT/'
      case $s in
        moonring)  start ./moonring -p '$PORT' --log-level warn examples/http.lua ;;
        moonring-bw) start ./moonring -p '$PORT' --log-level warn --batch-wait 50 examples/http.lua ;;
        nginx)     start_nginx ;;
        nginx-lua) start_nginx; url+=lua ;;
      esac
      spid=$pid
      [[ "$s" = moonring* ]] || spid=$(nginx_worker)
      wrk_record "http.$s" "$spid" "Non-2xx\|Socket errors" "$url"
      stop
    done
    echo "bench: http round $r of $ROUNDS done" >&2
  done
}

make_cert() { # one ECDSA P-256 certificate for every TLS server
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/tls.key" -out "$work/tls.pem" -days 2 -subj /CN=localhost 2>/dev/null
}

# 2b. The same over TLS: examples/http.lua on a tls:// listener against
# nginx with ssl, one self-signed certificate for both; wrk keeps its 50
# connections, so this is TLS records more than handshakes.
bench_https() {
  local servers=(moonring moonring-bw) r s spid
  [ -f "$work/tls.pem" ] || make_cert
  if [ $have_nginx = 1 ]; then
    nginx_conf
    # Debian's nginx leaves TLS 1.3 out by default: name it, so that both
    # servers speak the same protocol (moonring's default is 1.2 and 1.3).
    sed -i "s|listen 127.0.0.1:\\\$PORT reuseport;|listen 127.0.0.1:\\\$PORT ssl reuseport; ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate $work/tls.pem; ssl_certificate_key $work/tls.key;|" \
      "$work/nginx/nginx.conf"
    servers+=(nginx)
  fi
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" "${servers[@]}"); do
      case $s in
        moonring) start ./moonring -l 'tls://127.0.0.1:$PORT' --tls-cert "$work/tls.pem" \
                    --tls-key "$work/tls.key" --log-level warn examples/http.lua ;;
        moonring-bw) start ./moonring -l 'tls://127.0.0.1:$PORT' --tls-cert "$work/tls.pem" \
                    --tls-key "$work/tls.key" --log-level warn --batch-wait 50 examples/http.lua ;;
        nginx)    start_nginx ;;
      esac
      spid=$pid
      [[ "$s" = moonring* ]] || spid=$(nginx_worker)
      wrk_record "https.keep.$s" "$spid" "Non-2xx" 'https://127.0.0.1:$PORT/'
      # a new TLS connection for every request
      wrk_record "https.close.$s" "$spid" "Non-2xx" -H "Connection: close" 'https://127.0.0.1:$PORT/'
      stop
    done
    echo "bench: https round $r of $ROUNDS done" >&2
  done
}

# 2c. TLS echo, 4 KiB messages, 50 connections (loadgen --tls), then
# 2,000 clients 20 at a time, each a full handshake (loadgen keeps no
# session, unlike wrk, which resumes its own): moonring's echo on a tls://
# listener against nginx's stream module terminating TLS in front of the
# epoll echo (which runs on the server core too; nginx's CPU is its own).
stream_conf() {
  mkdir -p "$work/nginx/logs"
  { nginx_head stream ngx_stream_module; cat <<EOF
stream {
  server {
    listen 127.0.0.1:\$PORT ssl reuseport;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $work/tls.pem; ssl_certificate_key $work/tls.key;
    proxy_pass 127.0.0.1:\$BACKEND;
  }
}
EOF
  } >"$work/nginx/stream.conf"
}
bench_tls() {
  local servers=(moonring) r s out sp epid
  [ -f "$work/tls.pem" ] || make_cert
  if [ $have_stream = 1 ]; then stream_conf; servers+=(nginx-stream); fi
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" "${servers[@]}"); do
      sp='$PID' epid=
      case $s in
        moonring) start ./moonring -l 'tls://127.0.0.1:$PORT' --tls-cert "$work/tls.pem" \
                    --tls-key "$work/tls.key" --log-level warn ;;
        nginx-stream)
          start build/epoll_echo '$PORT'; epid=$pid
          sed "s/\\\$BACKEND/$PORT/; s/\\\$PORT/$((PORT + 1))/" "$work/nginx/stream.conf" \
            >"$work/nginx/run.conf"
          start nginx -p "$work/nginx" -c "$work/nginx/run.conf"; sp='$WORKER' ;;
      esac
      out=$(client build/loadgen --tls -p '$PORT' -c 50 -s 4096 -d "$SECS" -W 1 -S "$sp")
      set -- $out
      [ "${12}" = 0 ] || { echo "bench: $s TLS echo: $out" >&2; exit 1; }
      record "tls.4k.$s.rps" "$2"
      record "tls.4k.$s.cpu" "${10}"
      out=$(client build/loadgen --tls -p '$PORT' --churn 2000 -c 20 -s 64 -S "$sp")
      set -- $out
      [ "${12}" = 0 ] || { echo "bench: $s TLS churn: $out" >&2; exit 1; }
      record "tls.new.$s.rate" "$4"
      record "tls.new.$s.cpu" "${10}"
      stop
      [ -z "$epid" ] || { pid=$epid; stop; }
    done
    echo "bench: tls round $r of $ROUNDS done" >&2
  done
}

# 3. redis-benchmark -t ping,set,get -c 50, then with -P 16:
# examples/redis.lua against redis-server with persistence off.
bench_redis() {
  local r s p n out t0
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" moonring moonring-bw redis); do
      case $s in
        moonring) start ./moonring -p '$PORT' --log-level warn examples/redis.lua ;;
        moonring-bw) start ./moonring -p '$PORT' --log-level warn --batch-wait 50 examples/redis.lua ;;
        redis)    start redis-server --port '$PORT' --bind 127.0.0.1 --save '' \
                    --appendonly no --maxclients 19000 --logfile '' ;;
      esac
      for p in 1 16; do
        n=$((p == 1 ? 200000 : 2000000))
        t0=$(ticks "$pid")
        out=$(client redis-benchmark -p '$PORT' -t ping,set,get -c 50 -n "$n" -P "$p" -q |
              tr '\r' '\n' | grep 'requests per second' | sort -u)
        while IFS=: read -r test rest; do
          record "redis.P$p.$test.$s" "$(awk '{print $1}' <<<"$rest")"
        done <<<"$out"
        record "redis.P$p.cpu.$s" "$(cpu_per_req "$pid" "$t0" $((4 * n)))"
      done
      stop
    done
    echo "bench: redis round $r of $ROUNDS done" >&2
  done
}

# 3b. HTTP in front of Redis: examples/hits.lua against nginx with
# lua-nginx-module doing the same (tests/bench/nginx_hits.conf), both
# through a keepalive pool to one redis-server, which runs on the client
# core. Every response is checked: the counter in Redis must match the
# 200s wrk counted, give or take the requests in flight when it stopped.
start_hits() { # start_hits moonring|nginx REDIS_PORT
  if [ "$1" = moonring ]; then
    start ./moonring -p '$PORT' --log-level warn examples/hits.lua "127.0.0.1:$2"
  else
    mkdir -p "$work/nginx/logs"
    sed "s|@MODS@|/usr/lib/nginx/modules|; s|@WORK@|$work/nginx|; s|@PORT@|$((PORT + 1))|; s|@REDIS@|$2|" \
      tests/bench/nginx_hits.conf >"$work/nginx/hits.conf"
    start nginx -p "$work/nginx" -c "$work/nginx/hits.conf"
  fi
}
bench_hits() {
  local servers=(moonring) r s out spid t0 n got rport=$((PORT + 5000))
  [ $have_nginx = 1 ] && servers+=(nginx)
  note_cmd taskset -c $CCPU redis-server --port "$rport" --save '' --appendonly no
  taskset -c $CCPU redis-server --port "$rport" --bind 127.0.0.1 --save '' \
    --appendonly no --logfile '' >>"$log" 2>&1 & rpid=$!
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" "${servers[@]}"); do
      redis-cli -p "$rport" del hits >/dev/null
      start_hits "$s" "$rport"
      spid=$pid
      [ "$s" = moonring ] || spid=$(nginx_worker)
      t0=$(ticks "$spid")
      out=$(client wrk -t1 -c50 -d"${WRK_SECS}s" 'http://127.0.0.1:$PORT/')
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      got=$(redis-cli -p "$rport" get hits)
      if grep -q "Non-2xx\|Socket errors" <<<"$out" || [ "${got:-0}" -lt "$n" ] ||
         [ "$got" -gt $((n + 50)) ]; then
        echo "bench: hits $s: $n responses, counter $got: $out" >&2; exit 1
      fi
      record "hits.$s.rps" "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
      record "hits.$s.cpu" "$(cpu_per_req "$spid" "$t0" "$n")"
      stop
    done
    echo "bench: hits round $r of $ROUNDS done" >&2
  done
  kill "$rpid"; wait "$rpid" 2>/dev/null || true; rpid=
}

# 4. Churn: 1,000 short-lived clients, 50 at a time; the server's
# syscalls counted by strace (scripts/syscalls.sh).
bench_churn() {
  local r s out
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" moonring batched epoll); do
      if [ "$s" = moonring ]; then
        note_cmd scripts/syscalls.sh 1000 50
        out=$(scripts/syscalls.sh 1000 50)
      elif [ "$s" = batched ]; then
        note_cmd scripts/syscalls.sh 1000 50 -- taskset -c $SCPU ./moonring -p '$PORT' --batch-wait 50
        out=$(scripts/syscalls.sh 1000 50 -- sh -c "exec taskset -c $SCPU ./moonring -p \$PORT --log-level warn --batch-wait 50")
      else
        note_cmd scripts/syscalls.sh 1000 50 -- taskset -c $SCPU build/epoll_echo '$PORT'
        out=$(scripts/syscalls.sh 1000 50 -- sh -c "exec taskset -c $SCPU build/epoll_echo \$PORT")
      fi
      record "churn.waves.$s.enter" "$(awk -F'|' '/waves/ {print $3+0}' <<<"$out")"
      record "churn.waves.$s.all" "$(awk -F'|' '/waves/ {print $4+0}' <<<"$out")"
      record "churn.flight.$s.enter" "$(awk -F'|' '/in flight/ {print $3+0}' <<<"$out")"
      record "churn.flight.$s.all" "$(awk -F'|' '/in flight/ {print $4+0}' <<<"$out")"
    done
    echo "bench: churn round $r of $ROUNDS done" >&2
  done
}

# 5. Idle memory: RSS per connection with IDLE_CONNS idle connections.
idle() { # idle NAME PROBE [PID]: measure the server just started
  local out
  out=$(client scripts/idle-rss.py "${3:-\$PID}" '$PORT' "$IDLE_CONNS" "$2")
  record "idle.$1" "$(awk '{print $NF}' <<<"$out")"
  stop
}
bench_idle() {
  start ./moonring -p '$PORT' --log-level warn; idle moonring echo
  start build/epoll_echo '$PORT'; idle epoll echo
  if [ $have_tarantool = 1 ]; then
    start tarantool tests/bench/tarantool_echo.lua '$PORT'; idle tarantool echo
  fi
  if [ $have_nginx = 1 ]; then
    nginx_conf; start_nginx
    idle nginx http '$WORKER'
  fi
  start redis-server --port '$PORT' --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients 19000 --logfile ''
  idle redis-server redis
  echo "bench: idle memory done" >&2
}

# 6. Datagrams: 64-byte UDP echo, udpgen's 8 sockets each keeping 16 in
# flight, every answer checked: the default Lua echo (on_datagram
# replying) against a C recvmmsg/sendmmsg echo; then DNS queries to
# examples/dns.lua, from udpgen --dns and from dnsperf when Debian has it.
udp_ready() { # it answers a datagram (a DNS question with udp_probe=--dns)
  local out
  out=$(build/udpgen -p "$1" -c 1 -w 1 -d 0.05 -W 0 $udp_probe 2>/dev/null || true)
  [[ "$out" != "dgrams 0 "* && -n "$out" ]]
}
start_udp() { ready=udp_ready start "$@"; }
udp_probe=
udp_record() { # udp_record KEY ARGS...: udpgen's rate and the server's CPU
  local out
  out=$(client build/udpgen -p '$PORT' -d "$SECS" -W 1 -S '$PID' "$@")
  set -- $out
  [ "${12}" = 0 ] && [ "${10}" = 0 ] || { echo "bench: $key: $out" >&2; exit 1; }
  record "$key.rate" "$4"
  record "$key.cpu" "${14}"
  record "$key.p99" "$8"
}
bench_udp() {
  local r s key out qf="$work/dns.queries"
  printf '%s\n' "www.example.test A" "example.test AAAA" "txt.example.test TXT" \
    "nope.example.test A" >"$qf"
  for r in $(seq "$ROUNDS"); do
    udp_probe=
    for s in $(rotate "$r" moonring c); do
      case $s in
        moonring) start_udp ./moonring -l 'udp://127.0.0.1:$PORT' --log-level warn ;;
        c)        start_udp build/udp_echo '$PORT' ;;
      esac
      key=udp.64.$s; udp_record -c 8 -w 16 -s 64
      stop
    done
    udp_probe=--dns
    start_udp ./moonring -l 'udp://127.0.0.1:$PORT' --log-level warn examples/dns.lua
    key=udp.dns.udpgen; udp_record --dns -c 8 -w 16
    if [ $have_dnsperf = 1 ]; then
      local t0; t0=$(ticks "$pid")
      out=$(client dnsperf -s 127.0.0.1 -p '$PORT' -d "$qf" -l "$SECS" -c 8 -q 128 2>&1)
      local q; q=$(awk '/Queries per second:/ {print $4}' <<<"$out")
      local n; n=$(awk '/Queries completed:/ {print $3}' <<<"$out")
      [ -n "$q" ] || { echo "bench: dnsperf: $out" >&2; exit 1; }
      record udp.dns.dnsperf.rate "${q%.*}"
      record udp.dns.dnsperf.cpu "$(cpu_per_req "$pid" "$t0" "$n")"
      record udp.dns.dnsperf.lost "$(awk '/Queries lost:/ {print $3}' <<<"$out")"
    fi
    stop
    echo "bench: udp round $r of $ROUNDS done" >&2
  done
}

# 7. Shared dictionaries: a Lua loop of SHARED_N gets, then sets, of
# 100-byte values over 1,000 keys, timed inside the handler: moonring's
# mr.shared (tests/bench/shared_bench.lua) against nginx's ngx.shared.DICT
# (tests/bench/nginx_shared.conf), with one worker, then with two running
# the loop at once on the same dictionary (each on a core of its own: the
# client only sends one line). Operations per second; for two, the sum of
# the two loops' rates, and the two must be different workers.
shared_moonring() { # shared_moonring WORKERS: record the four rates
  local w=$1 op a b l1 l2 fd3= fd4=
  SCPU=0,1 start ./moonring -w "$w" -p '$PORT' --log-level warn --shared bench:64m \
    tests/bench/shared_bench.lua
  # a connection to each worker (new connections land where the kernel says)
  for _ in $(seq 50); do
    exec 5<>"/dev/tcp/127.0.0.1/$PORT"; echo who >&5; read -r -t 5 l1 <&5
    if [ -z "$fd3" ]; then exec 3<&5; fd3=$l1
    elif [ "$w" = 2 ] && [ -z "$fd4" ] && [ "$l1" != "$fd3" ]; then exec 4<&5; fd4=$l1; fi
    exec 5<&-
    [ "$w" = 1 ] || [ -n "$fd4" ] && break
  done
  [ "$w" = 1 ] || [ -n "$fd4" ] || { echo "bench: shared: no connection to each worker" >&2; exit 1; }
  for op in get set; do
    note_cmd socat - 'TCP:127.0.0.1:$PORT' "# sent: $op $SHARED_N"
    echo "$op $SHARED_N" >&3; [ "$w" = 1 ] || echo "$op $SHARED_N" >&4
    read -r -t 60 a l1 <&3; l2=0
    [ "$w" = 1 ] || read -r -t 60 b l2 <&4
    record "shared.moonring.$op.$w" "$(awk -v n="$SHARED_N" -v x="$l1" -v y="$l2" \
      'BEGIN { printf "%.0f", n / x + (y > 0 ? n / y : 0) }')"
  done
  exec 3<&-; [ "$w" = 1 ] || exec 4<&-
  stop
}
shared_nginx() { # shared_nginx WORKERS
  local w=$1 op try a b l1 l2 c1 c2
  mkdir -p "$work/nginx/logs"
  sed "s|@MODS@|/usr/lib/nginx/modules|; s|@WORK@|$work/nginx|; s|@PORT@|$((PORT + 1))|; s|@WORKERS@|$w|" \
    tests/bench/nginx_shared.conf >"$work/nginx/shared.conf"
  SCPU=0,1 start nginx -p "$work/nginx" -c "$work/nginx/shared.conf"
  for op in get set; do
    note_cmd curl -s "http://127.0.0.1:\$PORT/$op?n=$SHARED_N"
    for try in $(seq 10); do   # two at once must be on two workers
      curl -s "http://127.0.0.1:$PORT/$op?n=$SHARED_N" >"$work/s1" & c1=$!
      c2=
      [ "$w" = 1 ] || { curl -s "http://127.0.0.1:$PORT/$op?n=$SHARED_N" >"$work/s2" & c2=$!; }
      wait $c1 $c2             # not the server, also a child of ours
      read -r a l1 <"$work/s1"; b=x l2=0
      [ "$w" = 1 ] || read -r b l2 <"$work/s2"
      [ "$a" != "$b" ] && break
    done
    [ "$a" != "$b" ] || { echo "bench: shared: nginx ran both loops on one worker" >&2; exit 1; }
    record "shared.nginx.$op.$w" "$(awk -v n="$SHARED_N" -v x="$l1" -v y="$l2" \
      'BEGIN { printf "%.0f", n / x + (y > 0 ? n / y : 0) }')"
  done
  stop
}
bench_shared() {
  local servers=(moonring) r s w
  [ $have_nginx = 1 ] && servers+=(nginx)
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" "${servers[@]}"); do
      for w in 1 2; do "shared_$s" "$w"; done
    done
    echo "bench: shared round $r of $ROUNDS done" >&2
  done
}

# 8. Files: examples/files.lua (http.static, bytes sent with send_file)
# against nginx with sendfile and open_file_cache, the same files: a 4 KiB
# file (requests/s, CPU per request) and a 1 MiB file (bytes/s).
files_dir() { # the files every file workload serves, made once
  [ -d "$work/files" ] && return 0
  chmod 755 "$work"          # nginx's workers read them as nobody
  mkdir -p "$work/files"
  head -c 4096 /dev/urandom >"$work/files/4k.bin"
  head -c 1048576 /dev/urandom >"$work/files/1m.bin"
  echo "hello from moonring" >"$work/files/small.txt"
}
files_conf() { # nginx serving $work/files as a file server would
  mkdir -p "$work/nginx/logs"
  { nginx_head files; cat <<EOF
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  include /etc/nginx/mime.types;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  server {
    listen 127.0.0.1:\$PORT reuseport;
    root $work/files;
  }
}
EOF
  } >"$work/nginx/files.conf"
}
start_files() { # start_files moonring|nginx: sets spid, the serving process
  if [ "$1" = moonring ]; then
    start ./moonring -p '$PORT' --log-level warn examples/files.lua "$work/files"
  else
    sed "s/\\\$PORT/$((PORT + 1))/" "$work/nginx/files.conf" >"$work/nginx/run-files.conf"
    start nginx -p "$work/nginx" -c "$work/nginx/run-files.conf"
  fi
  spid=$pid
  [ "$1" = moonring ] || spid=$(nginx_worker)
}
bench_files() {
  local servers=(moonring) r s spid
  files_dir
  [ $have_nginx = 1 ] && { files_conf; servers+=(nginx); }
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" "${servers[@]}"); do
      start_files "$s"
      wrk_record "files.4k.$s" "$spid" "Non-2xx\|Socket errors" 'http://127.0.0.1:$PORT/4k.bin'
      wrk_record "files.1m.$s" "$spid" "Non-2xx\|Socket errors" 'http://127.0.0.1:$PORT/1m.bin'
      stop
    done
    echo "bench: files round $r of $ROUNDS done" >&2
  done
}

# 9. The mixed case: 50 echo clients, paced at MIXED_RATE messages/s in
# all (a load the worker can carry: at full speed any extra work shows in
# the latency), while one more client downloads a file of MIXED_MB MiB
# that is not in the page cache, from the same worker: the echo p99 alone,
# beside a download sent with send_file (through the ring), and beside the
# same download read with Lua's io library (tests/bench/mixed.lua).
uncache() { # drop a file from the page cache
  python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.fdatasync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"
}
mixed_run() { # mixed_run KEY [URL]: the echo p99 (beside a download of URL)
  local key=$1 url=${2:-} dl= out
  if [ -n "$url" ]; then
    uncache "$work/files/big.bin"
    # paced, as a client across a network would read: a download at
    # loopback speed would take the client core from the echo clients
    note_cmd taskset -c $CCPU curl -s -o /dev/null --limit-rate "$MIXED_LIMIT" "$url"
    taskset -c $CCPU curl -s -o /dev/null --limit-rate "$MIXED_LIMIT" -w '%{size_download}' \
      "${url//\$HPORT/$hport}" >"$work/dl.got" & dl=$!
    sleep 0.5                # its first bytes come from the disk
  fi
  out=$(client build/loadgen -p '$PORT' -c 50 -s 64 -r "$MIXED_RATE" -d "$SECS" -W 0.5)
  set -- $out
  [ "${10}" = 0 ] || { echo "bench: mixed $key: $out" >&2; exit 1; }
  record "mixed.$key.p99" "$6"
  record "mixed.$key.rps" "$2"
  [ -z "$dl" ] && return 0
  kill -0 "$dl" 2>/dev/null ||
    { echo "bench: mixed $key: the download ended before the echo did" >&2; exit 1; }
  kill "$dl"; wait "$dl" 2>/dev/null || true
}
bench_mixed() {
  local r hport
  files_dir
  [ -f "$work/files/big.bin" ] || head -c $((MIXED_MB * 1048576)) /dev/zero >"$work/files/big.bin"
  for r in $(seq "$ROUNDS"); do
    hport=$((PORT + 1 + 3000))
    start ./moonring -l 'tcp://127.0.0.1:$PORT' -l "tcp://127.0.0.1:$hport" --log-level warn \
      tests/bench/mixed.lua "$work/files" '$PORT'
    mixed_run alone
    mixed_run ring 'http://127.0.0.1:$HPORT/big.bin'
    mixed_run io 'http://127.0.0.1:$HPORT/io/big.bin'
    stop
    echo "bench: mixed round $r of $ROUNDS done" >&2
  done
}

# 10. examples/redis.lua with its append-only file (written through mr.fs,
# fsync every second) against redis-server with appendonly yes and
# appendfsync everysec: SET, without pipelining and 16 deep.
bench_aof() {
  local r s p n out t0
  for r in $(seq "$ROUNDS"); do
    for s in $(rotate "$r" moonring redis); do
      rm -rf "$work/aof"; mkdir -p "$work/aof"
      case $s in
        moonring) start ./moonring -p '$PORT' --log-level warn examples/redis.lua \
                    --aof "$work/aof/moonring.aof" ;;
        redis)    start redis-server --port '$PORT' --bind 127.0.0.1 --save '' \
                    --dir "$work/aof" --appendonly yes --appendfsync everysec --logfile '' ;;
      esac
      for p in 1 16; do
        n=$((p == 1 ? 200000 : 2000000))
        t0=$(ticks "$pid")
        out=$(client redis-benchmark -p '$PORT' -t set -r 100000 -c 50 -n "$n" -P "$p" -q |
              tr '\r' '\n' | grep 'requests per second' | sort -u)
        record "aof.P$p.$s" "$(awk -F: '{print $2}' <<<"$out" | awk '{print $1}')"
        record "aof.P$p.cpu.$s" "$(cpu_per_req "$pid" "$t0" "$n")"
      done
      stop
    done
    echo "bench: aof round $r of $ROUNDS done" >&2
  done
}

# ---- report --------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
meets() { # meets VALUE OP TARGET: yes, no, or - when there is no value
  awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
    if (v == "-") { print "-"; exit }
    ok = (op == ">=") ? v >= t : v <= t; print ok ? "yes" : "**no**" }'
}
k() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else if (v >= 10000) printf "%.0fk", v / 1000; else print v }'; }

table_echo() {
  local l w m e t re rt
  echo "**Echo, 50 connections, the default Lua echo script** (requests/s; CPU µs per request)"
  echo
  echo "| load | moonring | epoll (C) | tarantool | ÷ epoll | target ≥ | met | ÷ tarantool | target ≥ 1.2 | met |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for l in 64 4k p16; do
    m=$(median "echo.$l.moonring.rps"); e=$(median "echo.$l.epoll.rps"); t=$(median "echo.$l.tarantool.rps")
    w=$([ $l = p16 ] && echo 1.05 || echo 1.0)
    re=$(ratio "$m" "$e"); rt=$(ratio "$m" "$t")
    echo "| $l | $(k "$m") | $(k "$e") | $(k "$t") | $re | $w | $(meets "$re" '>=' "$w") | $rt | 1.2 | $(meets "$rt" '>=' 1.2) |"
  done
  echo
  echo "| server CPU per request | moonring µs | epoll µs | tarantool µs | moonring ÷ epoll | target ≤ | met |"
  echo "|---|---|---|---|---|---|---|"
  for l in 64 4k p16; do
    m=$(median "echo.$l.moonring.cpu"); e=$(median "echo.$l.epoll.cpu"); t=$(median "echo.$l.tarantool.cpu")
    re=$(ratio "$m" "$e")
    case $l in 64) w=1.0 ;; p16) w=0.9 ;; *) w=- ;; esac
    echo "| $l | $m | $e | $t | $re | $w | $([ $w = - ] && echo - || meets "$re" '<=' "$w") |"
  done
}

table_seq() {
  local l m q r w
  echo "**Sequential echo** (\`examples/echo_seq.lua\`, a connection function looping on \`receive_any\` and \`send\`) against the callback echo, same runs (requests/s)"
  echo
  echo "| load | sequential | callback | ÷ callback | target ≥ | met | sequential CPU µs | callback CPU µs |"
  echo "|---|---|---|---|---|---|---|---|"
  for l in 64 4k p16; do
    q=$(median "echo.$l.moonring-seq.rps"); m=$(median "echo.$l.moonring.rps")
    r=$(ratio "$q" "$m"); w=$([ $l = 4k ] && echo - || echo 0.9)
    echo "| $l | $(k "$q") | $(k "$m") | $r | $w | $([ $w = - ] && echo - || meets "$r" '>=' "$w") | $(median "echo.$l.moonring-seq.cpu") | $(median "echo.$l.moonring.cpu") |"
  done
}

table_hits() {
  local m n rr rc
  m=$(median hits.moonring.rps); n=$(median hits.nginx.rps)
  rr=$(ratio "$m" "$n"); rc=$(ratio "$(median hits.moonring.cpu)" "$(median hits.nginx.cpu)")
  echo "**HTTP in front of Redis**, \`wrk -t1 -c50 -d${WRK_SECS}s\`: \`examples/hits.lua\` against nginx + lua-nginx-module (\`tests/bench/nginx_hits.conf\`), both INCR through a keepalive pool (requests/s; server CPU µs per request)"
  echo
  echo "| | moonring | nginx-lua | moonring ÷ nginx | target | met |"
  echo "|---|---|---|---|---|---|"
  echo "| requests/s | $(k "$m") | $(k "$n") | $rr | ≥ 1.2 | $(meets "$rr" '>=' 1.2) |"
  echo "| CPU µs per request | $(median hits.moonring.cpu) | $(median hits.nginx.cpu) | $rc | ≤ 0.8 | $(meets "$rc" '<=' 0.8) |"
}

table_shared() {
  local op w m n r label
  echo "**Shared dictionary**, a Lua loop of $SHARED_N gets or sets of 100-byte values over 1,000 keys, timed inside the handler: \`mr.shared\` (\`tests/bench/shared_bench.lua\`) against nginx's \`ngx.shared.DICT\` (\`tests/bench/nginx_shared.conf\`) (operations/s; for two workers at once, the sum of their rates)"
  echo
  echo "| | moonring | nginx-lua | moonring ÷ nginx | target ≥ 1.0 | moonring ns per op | nginx ns per op |"
  echo "|---|---|---|---|---|---|---|"
  for w in 1 2; do
    for op in get set; do
      m=$(median "shared.moonring.$op.$w"); n=$(median "shared.nginx.$op.$w"); r=$(ratio "$m" "$n")
      label="$op, $([ $w = 1 ] && echo 'one worker' || echo 'two workers at once')"
      echo "| $label | $(k "$m") | $(k "$n") | $r | $(meets "$r" '>=' 1.0) |" \
        "$(awk -v v="$m" -v w=$w 'BEGIN { if (v == "-") print "-"; else printf "%.0f", 1e9 * w / v }') |" \
        "$(awk -v v="$n" -v w=$w 'BEGIN { if (v == "-") print "-"; else printf "%.0f", 1e9 * w / v }') |"
    done
  done
}

table_http() {
  local m b s v r w
  m=$(median http.moonring.rps)
  echo "**HTTP hello, \`wrk -t1 -c50 -d${WRK_SECS}s\`** (requests/s)"
  echo
  b=$(median http.moonring-bw.rps)
  echo "| server | requests/s | moonring ÷ it | target ≥ | met | server CPU µs per request | with --batch-wait 50 ÷ it |"
  echo "|---|---|---|---|---|---|---|"
  echo "| moonring examples/http.lua | $(k "$m") | | | | $(median http.moonring.cpu) | |"
  echo "| the same, --batch-wait 50 (an option) | $(k "$b") | | | | $(median http.moonring-bw.cpu) | |"
  for s in nginx nginx-lua; do
    v=$(median "http.$s.rps"); r=$(ratio "$m" "$v")
    w=$([ $s = nginx ] && echo 1.0 || echo 1.1)
    echo "| $s$([ $s = nginx ] && echo ' static' || echo ' content_by_lua') | $(k "$v") | $r | $w | $(meets "$r" '>=' "$w") | $(median "http.$s.cpu") | $(ratio "$b" "$v") |"
  done
}

table_https() {
  local m v r how
  echo "**HTTPS hello, \`wrk -t1 -c50 -d${WRK_SECS}s\`**: \`examples/http.lua\` on a \`tls://\` listener against nginx with \`ssl\`, one worker each, TLS 1.3, one ECDSA P-256 certificate; keep-alive, then \`Connection: close\` (a new TLS connection for every request, which wrk resumes with the ticket of its last one: an abbreviated handshake with a fresh X25519 exchange) (requests/s; server CPU µs per request)"
  echo
  echo "| | moonring | nginx | moonring ÷ nginx | target | met | with --batch-wait 50 (an option) | ÷ nginx |"
  echo "|---|---|---|---|---|---|---|---|"
  local b
  for how in keep close; do
    m=$(median "https.$how.moonring.rps"); v=$(median "https.$how.nginx.rps"); r=$(ratio "$m" "$v")
    b=$(median "https.$how.moonring-bw.rps")
    local want=$([ $how = keep ] && echo 1.1 || echo 1.0)
    echo "| requests/s, $([ $how = keep ] && echo keep-alive || echo 'new connections') | $(k "$m") | $(k "$v") | $r | ≥ $want | $(meets "$r" '>=' "$want") | $(k "$b") | $(ratio "$b" "$v") |"
    m=$(median "https.$how.moonring.cpu"); v=$(median "https.$how.nginx.cpu"); r=$(ratio "$m" "$v")
    b=$(median "https.$how.moonring-bw.cpu")
    if [ $how = keep ]; then
      echo "| CPU µs per request, keep-alive | $m | $v | $r | ≤ 0.9 | $(meets "$r" '<=' 0.9) | $b | $(ratio "$b" "$v") |"
    else
      echo "| CPU µs per request, new connections | $m | $v | $r | | | $b | $(ratio "$b" "$v") |"
    fi
  done
}

table_tls() {
  local m v
  echo "**TLS echo**, \`build/loadgen --tls\`: moonring's echo on a \`tls://\` listener against nginx's stream module (\`ssl\`, then \`proxy_pass\` to the epoll echo), one worker each, TLS 1.3, one ECDSA P-256 certificate: 4 KiB messages over 50 connections, then 2,000 clients 20 at a time, each a full handshake (no resumption), one 64-byte message and a close. nginx's CPU is its worker's alone, without the echo behind it."
  echo
  echo "| | moonring | nginx stream | moonring ÷ nginx |"
  echo "|---|---|---|---|"
  m=$(median tls.4k.moonring.rps); v=$(median tls.4k.nginx-stream.rps)
  echo "| requests/s, 4 KiB | $(k "$m") | $(k "$v") | $(ratio "$m" "$v") |"
  m=$(median tls.4k.moonring.cpu); v=$(median tls.4k.nginx-stream.cpu)
  echo "| server CPU µs per request, 4 KiB | $m | $v | $(ratio "$m" "$v") |"
  m=$(median tls.new.moonring.rate); v=$(median tls.new.nginx-stream.rate)
  echo "| full handshakes/s | $m | $v | $(ratio "$m" "$v") |"
  m=$(median tls.new.moonring.cpu); v=$(median tls.new.nginx-stream.cpu)
  echo "| server CPU µs per full handshake | $m | $v | $(ratio "$m" "$v") |"
}

table_redis() {
  local p t m v r b
  echo "**Redis, \`redis-benchmark -t ping,set,get -c 50\`** (requests/s)"
  echo
  echo "| test | moonring examples/redis.lua | redis-server | ÷ redis-server | target ≥ | met | with --batch-wait 50 (an option) | ÷ redis-server |"
  echo "|---|---|---|---|---|---|---|---|"
  for p in 1 16; do
    for t in PING_INLINE PING_MBULK SET GET; do
      m=$(median "redis.P$p.$t.moonring"); v=$(median "redis.P$p.$t.redis"); r=$(ratio "$m" "$v")
      b=$(median "redis.P$p.$t.moonring-bw")
      echo "| $t$([ $p = 16 ] && echo ', -P 16') | $(k "$m") | $(k "$v") | $r | 1.0 | $(meets "$r" '>=' 1.0) | $(k "$b") | $(ratio "$b" "$v") |"
    done
    m=$(median "redis.P$p.cpu.moonring"); v=$(median "redis.P$p.cpu.redis"); b=$(median "redis.P$p.cpu.moonring-bw")
    echo "| server CPU µs per request$([ $p = 16 ] && echo ', -P 16') | $m | $v | $(ratio "$m" "$v") | | | $b | $(ratio "$b" "$v") |"
  done
}

table_churn() {
  local mode me ma ee ea
  echo "**Churn: 1,000 clients, 50 at a time** (server syscalls, \`strace -c -f\`)"
  echo
  echo "| clients | moonring io_uring_enter | target ≤ 79 | moonring all | target ≤ 100 | with --batch-wait 50: io_uring_enter | all | epoll all |"
  echo "|---|---|---|---|---|---|---|---|"
  for mode in waves flight; do
    me=$(median "churn.$mode.moonring.enter"); ma=$(median "churn.$mode.moonring.all")
    ea=$(median "churn.$mode.epoll.all")
    echo "| $([ $mode = waves ] && echo 'in waves of 50' || echo '50 in flight') | $me | $(meets "$me" '<=' 79) | $ma | $(meets "$ma" '<=' 100) | $(median "churn.$mode.batched.enter") | $(median "churn.$mode.batched.all") | $ea |"
  done
}

table_idle() {
  local s v
  echo "**Idle memory: RSS per connection, $IDLE_CONNS idle connections** (bytes)"
  echo
  echo "| server | bytes per connection | target ≤ 512 |"
  echo "|---|---|---|"
  for s in moonring epoll tarantool nginx redis-server; do
    v=$(median "idle.$s")
    [ "$v" = - ] && continue
    echo "| $s | $v | $([ $s = moonring ] && meets "$v" '<=' 512) |"
  done
}

table_udp() {
  local m c r
  echo "**UDP echo, 64-byte datagrams**, \`build/udpgen -c 8 -w 16\` (8 sockets, 16 in flight each, every answer checked): the built-in echo's \`on_datagram\` replying, against a C echo on \`recvmmsg\`/\`sendmmsg\` (\`tests/bench/udp_echo.c\`) (datagrams/s; server CPU µs per datagram; the load generator's p99 round trip, µs)"
  echo
  echo "| | moonring | C recvmmsg | moonring ÷ C | target | met |"
  echo "|---|---|---|---|---|---|"
  m=$(median udp.64.moonring.rate); c=$(median udp.64.c.rate); r=$(ratio "$m" "$c")
  echo "| datagrams/s | $(k "$m") | $(k "$c") | $r | ≥ 0.9 | $(meets "$r" '>=' 0.9) |"
  m=$(median udp.64.moonring.cpu); c=$(median udp.64.c.cpu)
  echo "| CPU µs per datagram | $m | $c | $(ratio "$m" "$c") | | |"
  echo "| p99 µs | $(median udp.64.moonring.p99) | $(median udp.64.c.p99) | | | |"
  echo
  echo "**DNS, \`examples/dns.lua\`**: A, AAAA, TXT and NXDOMAIN questions in turn (queries/s; server CPU µs per query)"
  echo
  echo "| client | queries/s | CPU µs per query |"
  echo "|---|---|---|"
  echo "| udpgen --dns -c 8 -w 16 | $(k "$(median udp.dns.udpgen.rate)") | $(median udp.dns.udpgen.cpu) |"
  echo "| dnsperf -c 8 -q 128 | $(k "$(median udp.dns.dnsperf.rate)") | $(median udp.dns.dnsperf.cpu) |"
}

table_files() {
  local m v r
  echo "**Static files**, \`wrk -t1 -c50 -d${WRK_SECS}s\`: \`examples/files.lua\` (\`http.static\`, bytes sent with \`send_file\`) against nginx with \`sendfile on\` and \`open_file_cache\`, one worker each, the same files (requests/s; server CPU µs per request)"
  echo
  echo "| | moonring | nginx | moonring ÷ nginx | target | met |"
  echo "|---|---|---|---|---|---|"
  m=$(median files.4k.moonring.rps); v=$(median files.4k.nginx.rps); r=$(ratio "$m" "$v")
  echo "| 4 KiB file, requests/s | $(k "$m") | $(k "$v") | $r | ≥ 1.0 | $(meets "$r" '>=' 1.0) |"
  m=$(median files.4k.moonring.cpu); v=$(median files.4k.nginx.cpu); r=$(ratio "$m" "$v")
  echo "| 4 KiB file, CPU µs per request | $m | $v | $r | ≤ 0.9 | $(meets "$r" '<=' 0.9) |"
  m=$(median files.1m.moonring.rps); v=$(median files.1m.nginx.rps); r=$(ratio "$m" "$v")
  echo "| 1 MiB file, MiB/s | $m | $v | $r | ≥ 1.0 | $(meets "$r" '>=' 1.0) |"
  m=$(median files.1m.moonring.cpu); v=$(median files.1m.nginx.cpu)
  echo "| 1 MiB file, CPU µs per request | $m | $v | $(ratio "$m" "$v") | | |"
  m=$(median files.1m.moonring.wrk); v=$(median files.1m.nginx.wrk)
  echo "| 1 MiB file, wrk's CPU µs per request | $m | $v | $(ratio "$m" "$v") | | |"
}

table_mixed() {
  local a v
  a=$(median mixed.alone.p99)
  echo "**The mixed case**: 50 echo clients (\`build/loadgen -r $MIXED_RATE\`: 64-byte messages, $MIXED_RATE a second in all) while one more client downloads a ${MIXED_MB} MiB file that is not in the page cache from the same worker, at $MIXED_LIMIT/s (\`curl --limit-rate\`) (\`tests/bench/mixed.lua\`) (echo p99, µs; target: at most 1 ms above the run without the download)"
  echo
  echo "| download | echo p99 µs | above alone, µs | target ≤ 1000 | met | echo messages/s |"
  echo "|---|---|---|---|---|---|"
  echo "| none | $a | | | | $(median mixed.alone.rps) |"
  for v in ring io; do
    local p d; p=$(median "mixed.$v.p99")
    d=$(awk -v a="$a" -v p="$p" 'BEGIN { if (a == "-" || p == "-") print "-"; else printf "%.1f", p - a }')
    echo "| $([ $v = ring ] && echo 'send_file (through the ring)' || echo "Lua's io.open, 256 KiB reads") | $p | $d | $([ $v = ring ] && echo '≤ 1000' || echo) | $([ $v = ring ] && meets "$d" '<=' 1000 || echo -) | $(median "mixed.$v.rps") |"
  done
}

table_aof() {
  local p m v r
  echo "**Redis with an append-only file**, \`redis-benchmark -t set -r 100000 -c 50\`: \`examples/redis.lua --aof FILE\` (written through \`mr.fs\`, fsync every second) against redis-server with \`appendonly yes\` and \`appendfsync everysec\` (requests/s)"
  echo
  echo "| test | moonring | redis-server | ÷ redis-server | target ≥ | met | moonring CPU µs | redis-server CPU µs |"
  echo "|---|---|---|---|---|---|---|---|"
  for p in 1 16; do
    m=$(median "aof.P$p.moonring"); v=$(median "aof.P$p.redis"); r=$(ratio "$m" "$v")
    echo "| SET$([ $p = 16 ] && echo ', -P 16') | $(k "$m") | $(k "$v") | $r | 0.9 | $(meets "$r" '>=' 0.9) | $(median "aof.P$p.cpu.moonring") | $(median "aof.P$p.cpu.redis") |"
  done
}

about() { # the machine, the versions, the commands
  local c
  echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'): $ROUNDS alternating rounds, medians;"
  echo "servers on core $SCPU, load generators on core $CCPU."
  echo
  echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)," \
       "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "- kernel: $(uname -r); $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "- moonring $(git describe --always --dirty 2>/dev/null || echo '(no git)')," \
       "gcc $(gcc -dumpfullversion), liburing $(dpkg-query -W -f='${Version}' liburing-dev 2>/dev/null)," \
       "LuaJIT $(dpkg-query -W -f='${Version}' 'libluajit2-5.1-2' 2>/dev/null || dpkg-query -W -f='${Version}' 'libluajit-5.1-2' 2>/dev/null)"
  echo "- peers: $(nginx -v 2>&1 | sed 's/.*: //') with lua module" \
       "$(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null);" \
       "redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2);" \
       "$(tarantool --version 2>/dev/null | head -1);" \
       "$(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}')"
  for c in "${skipped[@]}"; do echo "- skipped: $c"; done
  echo
  echo "Commands (\$PORT is a fresh port for each start, \$PID the server's process id, \$WORKER nginx's worker's, /tmp/bench the run's temporary folder):"
  echo
  echo '```'
  sed "s|$work|/tmp/bench|g" "$work/commands"
  echo '```'
  [ -f "$work/nginx/nginx.conf" ] || return 0
  echo
  echo "nginx.conf (\$PORT as above):"
  echo
  echo '```nginx'
  sed "s|$work|/tmp/bench|g" "$work/nginx/nginx.conf"
  echo '```'
}

full=1                       # every workload ran: the whole part is rewritten
for w in $ALL; do [[ " $ONLY " == *" $w "* ]] || full=0; done

section() { # section NAME TABLE...: the tables, between markers of their own
  local name=$1 t; shift
  echo "<!-- bench: $name -->"
  for t in "$@"; do "$t"; echo; done
  if [ $full = 0 ] && [ "$name" != about ]; then
    echo "(From \`make bench ONLY=\"$ONLY\"\`, run on $(date -u '+%Y-%m-%d %H:%M UTC') apart" \
         "from the rest of this part; $ROUNDS rounds, medians. Its commands:)"
    echo
    echo '```'
    sed "s|$work|/tmp/bench|g" "$work/commands.$name"
    echo '```'
    echo
  fi
  echo "<!-- bench: $name end -->"
}

report() {
  local w
  for w in $ALL; do
    [[ " $ONLY " == *" $w "* ]] || continue
    case $w in
      echo) section echo table_echo table_seq ;;
      *)    section "$w" "table_$w" ;;
    esac
  done
  [ $full = 0 ] || section about about
}

# ---- main ----------------------------------------------------------------

for current in $ONLY; do "bench_$current"; done
report >"$work/report.md"
cat "$work/report.md"

# Replace the part of BENCHMARKS.md between the markers and keep the
# prose; a run of some workloads replaces only their sections.
python3 - "$OUT" "$work/report.md" "$full" <<'EOF'
import os, re, sys
out, report, full = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3] == "1"
b, e = "<!-- make bench: begin -->", "<!-- make bench: end -->"
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n\n%s\n%s\n" % (b, e)
head, rest = text.split(b, 1)
body, tail = rest.split(e, 1)
if full:
    body = "\n" + report
else:
    for m in re.finditer(r"<!-- bench: (\S+) -->\n.*?<!-- bench: \1 end -->\n", report, re.S):
        old = re.compile(r"<!-- bench: %s -->\n.*?<!-- bench: %s end -->\n" % ((re.escape(m[1]),) * 2), re.S)
        if old.search(body):
            body = old.sub(lambda _: m[0], body)
        elif "<!-- bench: about -->" in body:
            body = body.replace("<!-- bench: about -->", m[0] + "\n<!-- bench: about -->")
        else:
            body += m[0]
open(out, "w").write(head + b + body + e + tail)
EOF
echo "bench: table written to $OUT" >&2
