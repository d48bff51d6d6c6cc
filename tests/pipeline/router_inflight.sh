# router_inflight.sh - with 2 one-thread workers and eight concurrent sessions the router
# keeps two batches in flight at once (its max_batches_in_flight stat), so both stages
# compute, and every session still gets the same text as when it runs alone; `llorch up
# --max-inflight 1` passes the option on and gives back one batch at a time; and when the
# two workers' threads are more than the CPUs (each has them all), `llorch up` itself keeps
# one batch in flight, so that the stages take turns on the cores instead of sharing them.
. tests/pipeline/lib.sh
need_file "$STORIES"
prompts=("Once upon a time" "The cat sat" "Lily wanted to" "One day, a little boy" \
         "Tom and Sue went" "The sun was hot" "A big dog" "She was happy")
cpus=$(nproc)
# Each case: the batches in flight it wants, then the `llorch up` options.
cases=("$([ "$cpus" -ge 2 ] && echo 2 || echo 1) --threads-per-worker 1"
       "1 --threads-per-worker 1 --max-inflight 1"
       "1 --threads-per-worker $cpus")
rc=0
for c in "${cases[@]}"; do
    read -r want opts <<<"$c"
    read -ra extra <<<"$opts"
    up_start "$STORIES" --workers 2 "${extra[@]}" || exit 1
    out=$("$POKE" concurrent "$UP_EP" 48 "${prompts[@]}") || rc=1
    printf '%s\n' "$out"
    inflight=$(printf '%s\n' "$out" | sed -n 's/.*max_batches_in_flight \([0-9]*\).*/\1/p')
    if [ "${inflight:-0}" != "$want" ]; then
        echo "max_batches_in_flight is '${inflight}', want $want ($opts)"; rc=1
    fi
    if [ "$opts" = "--threads-per-worker $cpus" ] &&
       ! grep -q "share $cpus CPUs: up to 1 batch in flight" "$UP_ERR"; then
        echo "llorch up did not say why it keeps one batch in flight:"; tail -5 "$UP_ERR"; rc=1
    fi
    up_stop || { echo "llorch up did not exit cleanly"; rc=1; }
done
exit $rc
