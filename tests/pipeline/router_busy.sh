# router_busy.sh - the bounded queue: with one session slot and one queue place, a third
# request is refused at once as busy; a client that goes away mid-generation frees its
# slot, and the queued request then runs to its end.
. tests/pipeline/lib.sh
make_gqa_q8
dir=$(mktemp -d /tmp/llorch-busy-XXXXXX)
$BIN/llorch-loader -m "$GQA_Q8" --endpoint "ipc://$dir/loader" 2>"$dir/loader.log" & lpid=$!
$BIN/llorch-router --loader "ipc://$dir/loader" --control "ipc://$dir/control" \
    --results "ipc://$dir/results" --clients "ipc://$dir/clients" --max-sessions 1 \
    --max-queue 1 2>"$dir/router.log" & rpid=$!
$BIN/llorch-worker --loader "ipc://$dir/loader" --router "ipc://$dir/control" \
    --bind "ipc://$dir/w0" --layers 0:4 --threads 1 --id solo 2>"$dir/worker.log" & wpid=$!
rc=0
for _ in $(seq 100); do
    "$LLORCH" stats --router "ipc://$dir/clients" 2>/dev/null | grep -q '"pipelines_ready":1' && break
    sleep 0.1
done
ep=ipc://$dir/clients
"$LLORCH" generate --router "$ep" -p "Hello" -n 100000 --temp 0 >/dev/null 2>&1 & long=$!
sleep 0.3
"$LLORCH" generate --router "$ep" -p "Hi" -n 8 --temp 0 --json >"$dir/queued.json" 2>&1 & queued=$!
sleep 0.3
if "$LLORCH" generate --router "$ep" -p "Hey" -n 8 --temp 0 2>"$dir/refused.err" >/dev/null; then
    echo "a third request was not refused"; rc=1
fi
grep -q "busy" "$dir/refused.err" || { echo "the refusal does not say busy:"; cat "$dir/refused.err"; rc=1; }
kill -KILL $long; wait $long 2>/dev/null
wait $queued || { echo "the queued request failed:"; cat "$dir/queued.json"; rc=1; }
grep -q '"stop_reason":"length"' "$dir/queued.json" || { echo "queued request output:"; cat "$dir/queued.json"; rc=1; }
"$LLORCH" stats --router "$ep" | grep -q '"sessions_active":0' || { echo "a session is still active"; rc=1; }
kill -TERM $wpid $rpid $lpid
for p in $wpid $rpid $lpid; do wait $p || { echo "process $p did not exit cleanly"; rc=1; }; done
[ $rc -eq 0 ] || tail -5 "$dir"/*.log
rm -rf "$dir"
exit $rc
