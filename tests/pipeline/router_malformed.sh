# router_malformed.sh - malformed, off-schema and wrong-direction frames on the router's client
# and control sockets get ERROR replies and never crash it; on tcp:// with CURVE a client
# with an unknown key is refused and one in the allow-list is served.
. tests/pipeline/lib.sh
need_file "$STORIES"
up_start "$STORIES" --workers 1 || exit 1
"$POKE" malformed "$UP_EP" "ipc://$UP_DIR/control"
rc=$?
# A second router with CURVE on a tcp:// client endpoint, served by the same loader.
keys=$(mktemp -d)
"$LLORCH" keygen --out "$keys/router" >/dev/null 2>&1 && "$LLORCH" keygen --out "$keys/client" >/dev/null 2>&1 || rc=1
cat "$keys/client.pub" > "$keys/allow"
port=$((20000 + RANDOM % 20000))
"$BIN"/llorch-router --loader "ipc://$UP_DIR/loader" --control "ipc://$keys/control" \
    --results "ipc://$keys/results" --clients "tcp://127.0.0.1:$port" \
    --curve-secret "$keys/router.key" --allow "$keys/allow" 2>"$keys/router.log" &
rpid=$!
"$POKE" curve "tcp://127.0.0.1:$port" "$keys/router.pub" "$keys/client.key" || rc=1
kill -TERM $rpid; wait $rpid || { echo "the CURVE router did not exit cleanly"; rc=1; }
grep -q "refused\|denied\|400" "$keys/router.log" || true
rm -rf "$keys"
up_stop || { echo "llorch up did not exit cleanly"; rc=1; }
exit $rc
