#!/usr/bin/env bash
# `make bench`: builds the bandwidth probe and runs tests/bench/bench.mjs (llorch vs
# llama.cpp), then the profile of a 7B decode step (where its time goes, op by op:
# build/bench-profile.txt), then tests/bench/pipeline.mjs (the pipeline against
# in-process). Models it needs are made on first use under build/models/ (~8.5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
cc -O3 -march=native -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
   tests/bench/membw.c -o build/bench/membw
cc -O2 -std=c11 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror -Icommon \
   tests/bench/batch_bench.c build/lib/libllorch-core.a -ljansson -lmsgpackc -lzmq \
   -lsodium -lm -o build/bench/batch_bench
node tests/bench/bench.mjs
# BENCH_PROFILE=0 skips the profile.
if [ "${BENCH_PROFILE:-1}" != 0 ] && [ -f build/models/bench-llama2-7b-q8_0.gguf ]; then
    echo "profile of one decode step, llama2-7b Q8_0, 2 threads:"
    build/bench/batch_bench profile build/models/bench-llama2-7b-q8_0.gguf 2 | tee build/bench-profile.txt
fi
# The pipeline's rows (tests/bench/pipeline.mjs); BENCH_PIPELINE=0 skips them.
if [ "${BENCH_PIPELINE:-1}" != 0 ]; then
    cc -O2 -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iclient \
       tests/bench/pipeline_client.c build/lib/libllorch.a -lmsgpackc -lzmq -lsodium -lm \
       -o build/bench/pipeline_client
    cc -O2 -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Icommon -Iclient \
       tests/bench/pipeline_pair.c build/obj/client/lib/llorch.o build/lib/libllorch-core.a \
       -ljansson -lmsgpackc -lzmq -lsodium -lm -o build/bench/pipeline_pair
    node tests/bench/pipeline.mjs
fi
