#!/usr/bin/env bash
# The whole suite, as `make test` runs it: the build with warnings as errors (gcc, then
# clang), unit tests, the same under ASan+UBSan, the llama.cpp reference comparisons,
# the pipeline's process tests, the HTTP API tests and bounded fuzz runs.
# Ends with one line "total: N passed, N failed".
set -u
cd "$(dirname "$0")/.."
total_p=0; total_f=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

stage() {
    local name=$1; shift
    echo "== $name"
    "$@" 2>&1 | tee "$log/$name.out"
    local rc=${PIPESTATUS[0]}
    local line
    line=$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed' "$log/$name.out" | tail -1)
    local p f
    p=$(sed -n 's/.*: \([0-9]*\) passed.*/\1/p' <<<"$line"); p=${p:-0}
    f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line"); f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "$name: failed (exit $rc)"; fi
    total_p=$((total_p + p)); total_f=$((total_f + f))
}

stage build make --no-print-directory -j2 all
stage clang make --no-print-directory -j2 BUILD=build/clang CC=clang all
stage unit tests/run_unit.sh build/tests unit
stage asan bash -c 'make --no-print-directory -j2 BUILD=build/asan SAN=1 OPT=-O1 all >/dev/null && ASAN_OPTIONS=detect_leaks=1 tests/run_unit.sh build/asan/tests asan'
stage reference tests/reference/run.sh
stage pipeline tests/pipeline/run.sh
stage http tests/http/run.sh
stage fuzz tests/fuzz/run.sh

echo "total: $total_p passed, $total_f failed"
[ $total_f -eq 0 ]
