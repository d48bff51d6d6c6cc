# router_equal.sh - greedy output through the pipeline equals the in-process output token for
# token (and the top-3 probabilities to 1e-4), for K = 1..4 workers and uneven splits, on
# stories260K and a generated GQA Q8_0 model.
. tests/pipeline/lib.sh
need_file "$STORIES"
make_gqa_q8
fail=0
compare() { # MODEL PROMPT N SPLIT-ARGS...
    local model=$1 prompt=$2 n=$3; shift 3
    local a b
    a=$("$LLORCH" generate -m "$model" -p "$prompt" -n "$n" --temp 0 --top 3 --json --threads 1) || return 1
    b=$("$LLORCH" generate -m "$model" -p "$prompt" -n "$n" --temp 0 --top 3 --json \
        --threads-per-worker 1 "$@") || { echo "pipeline run failed: $*"; return 1; }
    python3 - "$a" "$b" "$(basename "$model") $*" <<'PY'
import json, sys
a, b, what = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
problems = [k for k in ("prompt_tokens", "tokens", "text", "stop_reason") if a[k] != b[k]]
if set(a) != set(b):
    problems.append("keys %s vs %s" % (sorted(a), sorted(b)))
dp = max((abs(x["p"] - y["p"]) for sa, sb in zip(a["top"], b["top"]) for x, y in zip(sa, sb)
          if x["id"] == y["id"]), default=0)
ids = all([x["id"] for x in sa] == [y["id"] for y in sb] for sa, sb in zip(a["top"], b["top"]))
if dp > 1e-4 or not ids:
    problems.append("top probabilities differ (max %g, ids equal %s)" % (dp, ids))
print("%-40s %s: %d tokens, %s" % (what, "same" if not problems else "DIFFERENT " + ", ".join(problems),
                                   len(b["tokens"]), b["stop_reason"]))
sys.exit(1 if problems else 0)
PY
}
for split in "--workers 1" "--workers 2" "--workers 3" "--workers 4" "--split 0:1,1:5" \
             "--split 0:3,3:4,4:5"; do
    # shellcheck disable=SC2086
    compare "$STORIES" "Once upon a time" 80 $split || fail=1
done
for split in "--workers 1" "--workers 2" "--workers 3" "--workers 4" "--split 0:3,3:4"; do
    # shellcheck disable=SC2086
    compare "$GQA_Q8" "The quick brown fox jumps over the lazy dog" 24 $split || fail=1
done
exit $fail
