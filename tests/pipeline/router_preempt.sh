# router_preempt.sh - a KV budget too small for 4 concurrent sessions together (each fits
# alone): the router preempts sessions and recomputes them later, so every one ends with
# exactly its solo greedy text and the router's STATS count the preemptions; a session that
# needs more than the whole budget alone still ends with the no_memory error.
. tests/pipeline/lib.sh
make_gqa_q8
# The GQA model's shape (make_gqa_q8): 4 layers, kv_dim = 128 / 4 heads * 2 kv heads = 64.
# Split 0:2,2:4, each worker caches 2 layers of F32 keys and values per position; blocks
# hold 32 positions. 6 blocks = 192 positions: one session of ~125 positions (4 blocks)
# fits, four together (16 blocks) do not.
per_pos=$((2 * 2 * 64 * 4))
budget=$((6 * 32 * per_pos))
up_start "$GQA_Q8" --split 0:2,2:4 --threads-per-worker 1 --kv-budget "$budget" || exit 1
prompts=("The quick brown fox" "Once upon a time" "A cat" "Hello world, said the")
dir=$(mktemp -d /tmp/llorch-preempt-XXXXXX)
run() { # OUT PROMPT N
    "$LLORCH" generate --router "$UP_EP" -p "$2" -n "$3" --temp 0 --ignore-eos --json >"$1" 2>&1
}
rc=0
for i in "${!prompts[@]}"; do
    run "$dir/solo$i" "${prompts[$i]}" 120 || { echo "solo run $i failed:"; cat "$dir/solo$i"; rc=1; }
done
pids=()
for i in "${!prompts[@]}"; do
    run "$dir/conc$i" "${prompts[$i]}" 120 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "concurrent run $i failed:"; cat "$dir/conc$i"; rc=1; }
done
stats=$("$LLORCH" stats --router "$UP_EP") || rc=1
# 250 tokens need 8 blocks: more than the budget even alone.
"$LLORCH" generate --router "$UP_EP" -p "Once upon a time" -n 250 --temp 0 --ignore-eos \
    >/dev/null 2>"$dir/big"; big=$?
up_stop || { echo "llorch up did not exit cleanly"; rc=1; }
python3 - "$dir" "${#prompts[@]}" "$stats" <<'PY' || rc=1
import json, sys
d, n, stats = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
bad = 0
for i in range(n):
    try:
        a, b = (json.load(open("%s/%s%d" % (d, k, i))) for k in ("solo", "conc"))
    except ValueError:
        bad = 1
        continue
    if a["tokens"] != b["tokens"] or a["text"] != b["text"] or len(b["tokens"]) != 120:
        print("session %d: concurrent text differs from solo (%d vs %d tokens)" %
              (i, len(b["tokens"]), len(a["tokens"])))
        bad = 1
if stats.get("preemptions", 0) <= 0:
    print("no preemptions counted:", stats)
    bad = 1
print("preempt: %d concurrent sessions equal their solo texts after %d preemptions" %
      (n, stats.get("preemptions", 0)))
sys.exit(bad)
PY
if [ $big -ne 1 ] || ! grep -q "kv cache budget exhausted" "$dir/big"; then
    echo "a session larger than the budget: exit $big, '$(cat "$dir/big")'"; rc=1
fi
n=$(grep -c "preempted on pipeline" "$UP_ERR")
[ "$n" -gt 0 ] || { echo "no preemption logged"; rc=1; }
rm -rf "$dir"
exit $rc
