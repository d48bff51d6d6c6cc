#!/usr/bin/env bash
# `make bench`: builds the bandwidth probe and runs tests/bench/bench.mjs (llorch vs
# llama.cpp). Models it needs are made on first use under build/models/ (~8.5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
cc -O3 -march=native -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
   tests/bench/membw.c -o build/bench/membw
exec node tests/bench/bench.mjs
