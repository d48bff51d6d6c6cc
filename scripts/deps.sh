#!/usr/bin/env bash
# Installs what llorch needs to build and test, and only what is missing:
# Debian -dev packages, compilers, and the npm packages of the llama.cpp reference
# harness (tests/reference). Safe to run again. With --check it is quiet when
# everything is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

quiet=0
[ "${1:-}" = "--check" ] && quiet=1

pkgs=(build-essential clang libclang-rt-14-dev pkg-config git
      libzmq3-dev libmsgpack-dev libsodium-dev libmicrohttpd-dev libjansson-dev
      libcmocka-dev nodejs npm iproute2 curl time)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs may come from elsewhere than Debian (a newer build): then node and npm are enough.
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
elif [ $quiet -eq 0 ]; then
    echo "deps: Debian packages present"
fi

ref=tests/reference
if [ ! -d "$ref/node_modules/@node-llama-cpp/linux-x64" ] || [ "$ref/package-lock.json" -nt "$ref/node_modules/.package-lock.json" ]; then
    echo "deps: installing the llama.cpp reference harness (node-llama-cpp 3.21.1, ~83 MB)"
    (cd "$ref" && npm ci --omit=optional --no-audit --no-fund --loglevel=error)
elif [ $quiet -eq 0 ]; then
    echo "deps: reference harness present"
fi
