# router_kv16.sh - `llorch up --kv-type f16`: every worker keeps an F16 KV cache (its log
# says so) and the pipeline serves the same greedy tokens and top-3 probabilities as the
# in-process run with --kv-type f16; --kv-type through a running router is refused.
. tests/pipeline/lib.sh
need_file "$STORIES"
up_start "$STORIES" --workers 2 --threads-per-worker 1 --kv-type f16 || exit 1
args=(-m "$STORIES" -p "Once upon a time" -n 24 --temp 0 --top 3 --json)
a=$("$LLORCH" generate --router "$UP_EP" "${args[@]}") || { up_stop; exit 1; }
# A running router's workers keep their cache type: asking for one through it is an error.
err=$("$LLORCH" generate --router "$UP_EP" --kv-type f32 "${args[@]}" 2>&1 >/dev/null); st=$?
up_stop || exit 1
rc=0
[ $st -eq 2 ] && [[ $err == *"keeps its own"* ]] || { echo "--router with --kv-type: exit $st, '$err'"; rc=1; }
n=$(grep -c "bytes of f16" "$UP_ERR")
[ "$n" -eq 2 ] || { echo "expected 2 workers with an F16 cache, saw $n:"; tail -20 "$UP_ERR"; rc=1; }
b=$("$LLORCH" generate --in-process --threads 1 --kv-type f16 "${args[@]}") || exit 1
python3 - "$a" "$b" <<'PY' || rc=1
import json, sys
a, b = (json.loads(s) for s in sys.argv[1:3])
if a["tokens"] != b["tokens"] or a["top"] != b["top"]:
    print("kv16: the pipeline's tokens or top-3 differ from in-process --kv-type f16:", a["tokens"], b["tokens"])
    sys.exit(1)
print("kv16: 2 workers with F16 caches; %d tokens and their top-3 probabilities equal in-process --kv-type f16" % len(a["tokens"]))
PY
rm -f "$UP_ERR"
exit $rc
