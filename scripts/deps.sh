#!/usr/bin/env bash
# Install the Debian packages moonring needs to build and test.
# Usage: scripts/deps.sh [build|test|fuzz|bench]   or   scripts/deps.sh only PKG...
# Installs only what is missing; never prompts (CI has no stdin); never
# removes a package (it refuses, naming what apt would remove).
set -euo pipefail

want=(liburing-dev libssl-dev pkg-config gcc make)
case "${1:-build}" in
  build) ;;
  # the examples' tests drive them with real clients and peers
  test)  want+=(libcmocka-dev python3 curl wrk redis-tools redis-server socat openssl dnsutils lua-cjson) ;;
  fuzz)  want+=(clang libclang-rt-14-dev) ;;
  # make bench's peers (nginx, tarantool) come one by one through 'only',
  # so that a peer Debian cannot give is skipped rather than fatal
  bench) want+=(python3 wrk redis-tools redis-server strace) ;;
  only)  want=("${@:2}") ;;
  *) echo "deps.sh: unknown set '$1' (build|test|fuzz|bench|only)" >&2; exit 2 ;;
esac

have() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == *'install ok installed'* ]]; }

# LuaJIT: Debian 12 has two, each a runtime and a -dev package:
# libluajit-5.1-{2,dev} (which the luajit interpreter needs) and
# libluajit2-5.1-{2,dev} (OpenResty's branch). Either builds moonring, but
# they conflict: installing one -dev removes the other runtime and whatever
# needs it. So take the -dev matching the runtime already there.
if ! have libluajit2-5.1-dev && ! have libluajit-5.1-dev; then
  if have libluajit-5.1-2; then want+=(libluajit-5.1-dev); else want+=(libluajit2-5.1-dev); fi
fi

missing=()
for p in "${want[@]}"; do have "$p" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "deps.sh: missing packages: ${missing[*]}" >&2
  echo "deps.sh: run as root, or install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq </dev/null
install=(apt-get install -y -qq --no-install-recommends)

# apt -y removes whatever conflicts with what it installs, without a word:
# ask for the plan first (a simulation needs no root) and refuse any removal.
if ! plan=$("${install[@]}" -s "${missing[@]}" </dev/null 2>&1); then
  printf '%s\n' "$plan" >&2
  echo "deps.sh: apt-get cannot install ${missing[*]}" >&2
  exit 1
fi
removed=$(awk '$1 == "Remv" { printf " %s", $2 }' <<<"$plan")
if [ -n "$removed" ]; then
  echo "deps.sh: not installing ${missing[*]}: apt would remove${removed}." \
       "No package was changed. To go ahead, remove or replace those yourself" \
       "(or run 'sudo apt-get install ${missing[*]}' and accept the removal)," \
       "then run this again." >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
# --no-remove: should the plan have changed since, apt aborts rather than remove
"${sudo[@]}" "${install[@]}" --no-remove "${missing[@]}" </dev/null >/dev/null
