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
    same_output "$a" "$b" "$(basename "$model") $*"
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
