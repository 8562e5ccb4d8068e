#!/usr/bin/env bash
# scripts/deps.sh's choices, against fake dpkg-query, apt-get, id and sudo
# first on PATH: which LuaJIT -dev it takes beside which runtime, and that
# it installs only when apt's simulated plan removes nothing. Changes
# nothing on the system; needs no root, no network.
set -euo pipefail
deps=$(cd "$(dirname "$0")/.." && pwd)/scripts/deps.sh
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT

# dpkg-query -W -f=... PKG: "installed" if PKG is in $FAKE_INSTALLED
cat >"$fake/dpkg-query" <<'EOF'
#!/bin/sh
for p in $FAKE_INSTALLED; do [ "$p" = "$3" ] && { printf 'install ok installed'; exit 0; }; done
exit 1
EOF
# apt-get: logs each call (with its stdin and frontend); -s prints $FAKE_PLAN
cat >"$fake/apt-get" <<'EOF'
#!/bin/sh
in=other; [ /proc/self/fd/0 -ef /dev/null ] && in=/dev/null
echo "stdin=$in frontend=$DEBIAN_FRONTEND $*" >>"$FAKE_LOG"
case " $* " in *" -s "*) [ -n "$FAKE_PLAN" ] && printf '%s\n' "$FAKE_PLAN"; exit "${FAKE_PLAN_RC:-0}";; esac
EOF
# id -u: root, so that deps.sh calls apt-get itself and never a real sudo
printf '#!/bin/sh\necho 0\n' >"$fake/id"
printf '#!/bin/sh\necho "fake sudo: not to be called" >&2; exit 1\n' >"$fake/sudo"
chmod +x "$fake"/*
export PATH="$fake:$PATH" FAKE_LOG="$fake/log"

base="liburing-dev libssl-dev pkg-config gcc make"
fails=0
run() { # run INSTALLED [PLAN [PLAN_RC]]: deps.sh build; sets rc, out, log
  : >"$FAKE_LOG"
  rc=0
  # stdin a pipe and no DEBIAN_FRONTEND, so deps.sh must set both itself
  out=$(env -u DEBIAN_FRONTEND FAKE_INSTALLED="$base $1" FAKE_PLAN="${2:-}" FAKE_PLAN_RC="${3:-0}" \
        "$deps" build 2>&1 <<<"y") || rc=$?
  log=$(<"$FAKE_LOG")
}
check() { # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; else
    echo "FAIL $name"; echo "  rc=$rc out: $out"; echo "  apt-get calls:"; sed 's/^/    /' "$FAKE_LOG"
    fails=$((fails + 1)); fi
}
has() { grep -qE -- "$1" <<<"$2"; }
# the real (not simulated) install of exactly $1, unattended
installed() { [ $rc -eq 0 ] && has "^stdin=/dev/null frontend=noninteractive install .*--no-remove $1\$" "$log"; }
simulated() { has "^stdin=/dev/null frontend=noninteractive install .* -s $1\$" "$log"; }
chose() { simulated "$1" && installed "$1"; }
untouched() { [ $rc -eq 0 ] && [ -z "$log" ]; }   # apt-get never called
refused() { [ $rc -ne 0 ] && ! has " install .*--no-remove" "$log" && has "$1" "$out"; }

run "luajit libluajit-5.1-2"
check "beside libluajit-5.1-2: libluajit-5.1-dev" chose libluajit-5.1-dev
run "libluajit2-5.1-2"
check "beside libluajit2-5.1-2: libluajit2-5.1-dev" chose libluajit2-5.1-dev
run ""
check "no runtime: libluajit2-5.1-dev" chose libluajit2-5.1-dev
run "libluajit-5.1-2 libluajit-5.1-dev"
check "a -dev already there: apt not called" untouched
run "libluajit2-5.1-2 libluajit2-5.1-dev"
check "the other -dev already there: apt not called" untouched

run "" "Remv luajit [2.1.0~beta3]
Remv libluajit-5.1-2 [2.1.0~beta3] [luajit:amd64 ]
Inst libluajit2-5.1-2 (2.1-20230119-1 Debian:12 [amd64])
Inst libluajit2-5.1-dev (2.1-20230119-1 Debian:12 [amd64])"
check "a plan with Remv: refused, names them, no install" \
  refused "would remove luajit libluajit-5.1-2\. .*sudo apt-get install libluajit2-5.1-dev"
run "" "Inst libluajit2-5.1-dev (2.1-20230119-1 Debian:12 [amd64])
Conf libluajit2-5.1-dev (2.1-20230119-1 Debian:12 [amd64])"
check "a clean plan: installed" installed libluajit2-5.1-dev
run "" "E: Unable to locate package libluajit2-5.1-dev" 100
check "apt cannot plan: apt's error, no install" refused "E: Unable to locate"

[ $fails -eq 0 ] || { echo "deps-plan: $fails failed"; exit 1; }
