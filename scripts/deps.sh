#!/usr/bin/env bash
# Install the Debian packages moonring needs to build and test.
# Usage: scripts/deps.sh [build|test|fuzz|bench]   or   scripts/deps.sh only PKG...
# Installs only what is missing; never prompts (CI has no stdin).
set -euo pipefail

want=(liburing-dev pkg-config gcc make)
case "${1:-build}" in
  build) ;;
  # the examples' tests drive them with real clients and peers
  test)  want+=(libcmocka-dev python3 curl wrk redis-tools redis-server socat) ;;
  fuzz)  want+=(clang libclang-rt-14-dev) ;;
  # make bench's peers (nginx, tarantool) come one by one through 'only',
  # so that a peer Debian cannot give is skipped rather than fatal
  bench) want+=(python3 wrk redis-tools redis-server strace) ;;
  only)  want=("${@:2}") ;;
  *) echo "deps.sh: unknown set '$1' (build|test|fuzz|bench|only)" >&2; exit 2 ;;
esac

have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# LuaJIT: Debian 12 ships libluajit2-5.1-dev (OpenResty's branch) and the
# older libluajit-5.1-dev; either one will do.
if ! have libluajit2-5.1-dev && ! have libluajit-5.1-dev; then
  want+=(libluajit2-5.1-dev)
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

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq </dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
