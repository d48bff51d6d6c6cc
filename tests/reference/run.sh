#!/usr/bin/env bash
# The llama.cpp reference comparisons (node's test runner over tests/reference/*.test.mjs).
# Prints "reference: N passed, N failed".
set -u
cd "$(dirname "$0")"
files=$(ls ./*.test.mjs 2>/dev/null)
if [ -z "$files" ]; then echo "reference: 0 passed, 0 failed"; exit 0; fi
# llama-dump (llama.cpp's intermediate tensors) is built once here, not by tests racing.
./build_dump.sh >/dev/null || echo "reference: llama-dump did not build; the tests that need it will fail"
out=$(node --test --test-reporter=tap $files 2>&1); rc=$?
printf '%s\n' "$out" | grep -E '^(not ok|ok|# (pass|fail|skip))' | grep -v '^ok' || true
printf '%s\n' "$out" | grep -A30 '^not ok' | head -200 || true
p=$(printf '%s\n' "$out" | sed -n 's/^# pass \([0-9]*\)/\1/p' | tail -1)
f=$(printf '%s\n' "$out" | sed -n 's/^# fail \([0-9]*\)/\1/p' | tail -1)
echo "reference: ${p:-0} passed, ${f:-0} failed"
exit $rc
