#!/usr/bin/env bash
# Runs every tests/pipeline/*.sh test (not lib.sh, not this file) against build/ and prints
# "pipeline: N passed, N failed". Each test script exits 0 when it passes.
set -u
cd "$(dirname "$0")/../.."
make --no-print-directory -j2 all >/dev/null || { echo "pipeline: 0 passed, 1 failed"; exit 1; }
passed=0; failed=0
for t in tests/pipeline/*.sh; do
    case "$(basename "$t")" in lib.sh|run.sh) continue;; esac
    start=$(date +%s%N)
    out=$(timeout 300 bash "$t" 2>&1); rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    secs=$((ms / 1000)).$(( (ms % 1000) / 100 ))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1)); echo "ok   $(basename "$t") (${secs} s)"
    else
        failed=$((failed + 1)); echo "FAIL $(basename "$t") (exit $rc)"; printf '%s\n' "$out" | tail -30
    fi
done
echo "pipeline: $passed passed, $failed failed"
[ $failed -eq 0 ]
