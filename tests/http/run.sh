#!/usr/bin/env bash
# The HTTP API tests (node's test runner over tests/http/*.test.mjs): the official openai
# client, SSE framing, errors, limits, keys, /health and /metrics against real processes.
# Prints "http: N passed, N failed".
set -u
cd "$(dirname "$0")"
files=$(ls ./*.test.mjs 2>/dev/null)
if [ -z "$files" ]; then echo "http: 0 passed, 0 failed"; exit 0; fi
for b in llorch llorch-loader llorch-worker llorch-router; do
    if [ ! -x ../../build/bin/$b ]; then echo "http: build/bin/$b is missing: run make"; echo "http: 0 passed, 1 failed"; exit 1; fi
done
# One file at a time: each starts its own pipeline and the machine may have 2 cores.
out=$(node --test --test-concurrency=1 --test-reporter=tap $files 2>&1); rc=$?
printf '%s\n' "$out" | grep -E '^(not ok|ok|# (pass|fail|skip))' | grep -v '^ok' || true
printf '%s\n' "$out" | grep -B2 -A40 'not ok' | head -300 || true
p=$(printf '%s\n' "$out" | sed -n 's/^# pass \([0-9]*\)/\1/p' | tail -1)
f=$(printf '%s\n' "$out" | sed -n 's/^# fail \([0-9]*\)/\1/p' | tail -1)
echo "http: ${p:-0} passed, ${f:-0} failed"
exit $rc
