# router_inflight.sh - with 2 workers and eight concurrent sessions the router keeps two
# batches in flight at once (its max_batches_in_flight stat), so both stages compute, and
# every session still gets the same text as when it runs alone.
. tests/pipeline/lib.sh
need_file "$STORIES"
up_start "$STORIES" --workers 2 --threads-per-worker 1 || exit 1
out=$("$POKE" concurrent "$UP_EP" 48 "Once upon a time" "The cat sat" "Lily wanted to" \
    "One day, a little boy" "Tom and Sue went" "The sun was hot" "A big dog" "She was happy")
rc=$?
printf '%s\n' "$out"
inflight=$(printf '%s\n' "$out" | sed -n 's/.*max_batches_in_flight \([0-9]*\).*/\1/p')
if [ "${inflight:-0}" != 2 ]; then
    echo "max_batches_in_flight is '${inflight}', want 2 (one batch per worker)"; rc=1
fi
up_stop || { echo "llorch up did not exit cleanly"; rc=1; }
exit $rc
