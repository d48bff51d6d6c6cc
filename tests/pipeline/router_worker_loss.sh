# router_worker_loss.sh - a worker lost during a generation (processes started by hand, fast
# heartbeats): the router declares it dead, the request ends with an error naming the worker
# (no hang, no crash), the router still serves, and a replacement worker brings the
# pipeline back.
. tests/pipeline/lib.sh
make_gqa_q8
dir=$(mktemp -d /tmp/llorch-loss-XXXXXX)
B=$BIN
$B/llorch-loader -m "$GQA_Q8" --endpoint "ipc://$dir/loader" 2>"$dir/loader.log" & lpid=$!
$B/llorch-router --loader "ipc://$dir/loader" --control "ipc://$dir/control" \
    --results "ipc://$dir/results" --clients "ipc://$dir/clients" --heartbeat-ms 100 \
    2>"$dir/router.log" & rpid=$!
worker() { # NAME LAYERS INDEX
    $B/llorch-worker --loader "ipc://$dir/loader" --router "ipc://$dir/control" \
        --bind "ipc://$dir/w$3" --layers "$2" --threads 1 --id "$1" 2>>"$dir/$1.log" &
}
worker first 0:2 0; w0=$!
worker last 2:4 1; w1=$!
rc=0
ready_at "ipc://$dir/clients" || rc=1
out=$dir/generate.err
"$LLORCH" generate --router "ipc://$dir/clients" -p "Hello" -n 100000 --temp 0 \
    --timeout-ms 20000 >/dev/null 2>"$out" & gpid=$!
sleep 0.5
kill -KILL $w1
wait $gpid; st=$?
[ $st -ne 0 ] || { echo "generation did not fail after its worker was lost"; rc=1; }
grep -q "lost.*last" "$out" || { echo "the error does not name the lost worker:"; cat "$out"; rc=1; }
"$LLORCH" stats --router "ipc://$dir/clients" | grep -q '"pipelines_ready":0' ||
    { echo "the router still counts a ready pipeline"; rc=1; }
worker last2 2:4 2; w2=$!
ready_at "ipc://$dir/clients" || rc=1
"$LLORCH" generate --router "ipc://$dir/clients" -p "Hello" -n 8 --temp 0 >/dev/null 2>&1 ||
    { echo "no generation after the replacement worker came"; rc=1; }
kill -TERM $w0 $w2 $rpid $lpid
for p in $w0 $w2 $rpid $lpid; do wait $p || { echo "process $p did not exit cleanly"; rc=1; }; done
[ $rc -eq 0 ] || tail -5 "$dir"/*.log
rm -rf "$dir"
exit $rc
