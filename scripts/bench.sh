#!/usr/bin/env bash
# `make bench`: builds the bandwidth probe and runs tests/bench/bench.mjs (llorch vs
# llama.cpp), then tests/bench/pipeline.mjs (the pipeline against in-process). Models it
# needs are made on first use under build/models/ (~8.5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
cc -O3 -march=native -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
   tests/bench/membw.c -o build/bench/membw
node tests/bench/bench.mjs
# The pipeline's rows (tests/bench/pipeline.mjs); BENCH_PIPELINE=0 skips them.
if [ "${BENCH_PIPELINE:-1}" != 0 ]; then
    cc -O2 -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iclient \
       tests/bench/pipeline_client.c build/lib/libllorch.a -lmsgpackc -lzmq -lsodium -lm \
       -o build/bench/pipeline_client
    node tests/bench/pipeline.mjs
fi
