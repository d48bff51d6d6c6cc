#!/usr/bin/env bash
# Runs every cmocka test binary in DIR and prints "unit: N passed, N failed".
# Exit status is non-zero when any test fails or a binary crashes.
set -u
dir=${1:?usage: run_unit.sh BUILD_TEST_DIR}
label=${2:-unit}
passed=0; failed=0
for t in "$dir"/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d) continue;; esac
    out=$("$t" 2>&1); rc=$?
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    p=${p:-0}; f=${f:-0}
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or failed outside cmocka
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        echo "FAIL $(basename "$t") (exit $rc)"
        printf '%s\n' "$out" | tail -40
    else
        echo "ok   $(basename "$t") ($p)"
    fi
done
echo "$label: $passed passed, $failed failed"
[ $failed -eq 0 ]
