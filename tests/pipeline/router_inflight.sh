# router_inflight.sh - with 2 workers and eight concurrent sessions the router keeps two
# batches in flight at once (its max_batches_in_flight stat), so both stages compute, and
# every session still gets the same text as when it runs alone; `llorch up --max-inflight 1`
# passes the option on and gives back one batch at a time.
. tests/pipeline/lib.sh
need_file "$STORIES"
prompts=("Once upon a time" "The cat sat" "Lily wanted to" "One day, a little boy" \
         "Tom and Sue went" "The sun was hot" "A big dog" "She was happy")
rc=0
for want in 2 1; do
    extra=()
    [ "$want" = 1 ] && extra=(--max-inflight 1)
    up_start "$STORIES" --workers 2 --threads-per-worker 1 "${extra[@]}" || exit 1
    out=$("$POKE" concurrent "$UP_EP" 48 "${prompts[@]}") || rc=1
    printf '%s\n' "$out"
    inflight=$(printf '%s\n' "$out" | sed -n 's/.*max_batches_in_flight \([0-9]*\).*/\1/p')
    if [ "${inflight:-0}" != "$want" ]; then
        echo "max_batches_in_flight is '${inflight}', want $want (${extra[*]:-default})"; rc=1
    fi
    up_stop || { echo "llorch up did not exit cleanly"; rc=1; }
done
exit $rc
