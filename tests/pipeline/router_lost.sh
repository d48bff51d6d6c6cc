# router_lost.sh - the router lost while a request runs (processes started by hand): the
# client's request ends at once with an error that says the connection to the router was
# lost (no hang, although the client sets no timeout), and after a new router comes up on
# the same endpoint the same client's next request is served. On tcp:// with CURVE, a client
# whose key the router does not allow is told so instead of waiting.
. tests/pipeline/lib.sh
make_gqa_q8
dir=$(mktemp -d /tmp/llorch-lost-XXXXXX)
B=$BIN
$B/llorch-loader -m "$GQA_Q8" --endpoint "ipc://$dir/loader" 2>"$dir/loader.log" & lpid=$!
router() { # extra options...
    $B/llorch-router --loader "ipc://$dir/loader" --control "ipc://$dir/control" \
        --results "ipc://$dir/results" --clients "ipc://$dir/clients" "$@" \
        2>>"$dir/router.log" &
    rpid=$!
}
router
$B/llorch-worker --loader "ipc://$dir/loader" --router "ipc://$dir/control" \
    --bind "ipc://$dir/w0" --layers 0:4 --threads 1 --id only 2>>"$dir/worker.log" & wpid=$!
rc=0
ready_at "ipc://$dir/clients" || rc=1
# The worker stopped: the request waits in the router, which is then killed.
kill -STOP $wpid
timeout 60 "$POKE" lost "ipc://$dir/clients" "$dir/killed" >"$dir/client.out" 2>&1 & cpid=$!
# Killed once the router holds the request (a session active on the stopped worker).
for _ in $(seq 100); do
    [ -e "$dir/killed" ] && "$LLORCH" stats --router "ipc://$dir/clients" 2>/dev/null |
        grep -q '"sessions_active":1' && break
    sleep 0.1
done
kill -KILL $rpid; wait $rpid 2>/dev/null
kill -CONT $wpid
router
wait $cpid || rc=1
cat "$dir/client.out"
grep -q "lost the connection to the router" "$dir/client.out" ||
    { echo "the client did not say it lost the router"; rc=1; }
kill -TERM $rpid $wpid $lpid; wait $rpid $wpid $lpid
# CURVE: a key the router does not allow.
keys=$dir/keys; mkdir "$keys"
for k in router client stranger; do "$LLORCH" keygen --out "$keys/$k" >/dev/null 2>&1 || rc=1; done
cat "$keys/client.pub" > "$keys/allow"
port=$((20000 + RANDOM % 20000))
$B/llorch-loader -m "$GQA_Q8" --endpoint "ipc://$dir/loader" 2>>"$dir/loader.log" & lpid=$!
$B/llorch-router --loader "ipc://$dir/loader" --control "ipc://$dir/control" \
    --results "ipc://$dir/results" --clients "tcp://127.0.0.1:$port" \
    --curve-secret "$keys/router.key" --allow "$keys/allow" 2>>"$dir/router.log" & rpid=$!
err=$(timeout 20 "$LLORCH" generate --router "tcp://127.0.0.1:$port" --curve-key "$keys/stranger.key" \
      --curve-server-public "$keys/router.pub" -p "Hello" -n 4 2>&1 >/dev/null); st=$?
if [ $st -eq 0 ] || [ $st -eq 124 ] || [[ $err != *"refused this client's CURVE key"* ]]; then
    echo "a stranger's key: exit $st, '$err' (want a failure that says the key was refused)"; rc=1
fi
kill -TERM $rpid $lpid; wait $rpid $lpid
rm -rf "$dir"
exit $rc
