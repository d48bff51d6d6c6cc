# lib.sh - helpers of the pipeline tests: paths, test models, starting and stopping `llorch up`.
# Sourced by tests/pipeline/*.sh; run from the repository root.
set -u
LLORCH=${LLORCH:-build/bin/llorch}
POKE=${POKE:-build/tests/pipeline/router_poke}
BIN=$(dirname "$LLORCH")
SHARED=${LLORCH_SHARED:-../shared}
STORIES=$SHARED/models/stories260K.gguf
VOCAB=$SHARED/vocab/ggml-vocab-llama-spm.gguf
GQA_Q8=build/test-models/pipe-gqa-q8.gguf
# The logs of every `llorch up` of this test, removed when it exits.
UP_LOGS=()
trap 'rm -f "${UP_LOGS[@]}"' EXIT

need_file() {
    if [ ! -f "$1" ]; then
        echo "missing $1 (set LLORCH_SHARED to the folder holding models/ and vocab/)" >&2
        exit 1
    fi
}

# The generated GQA Q8_0 model (made once).
make_gqa_q8() {
    need_file "$VOCAB"
    if [ ! -f "$GQA_Q8" ]; then
        mkdir -p "$(dirname "$GQA_Q8")"
        "$LLORCH" mkmodel --type q8_0 --dim 128 --layers 4 --heads 4 --kv-heads 2 --ffn 256 \
            --vocab "$VOCAB" --out "$GQA_Q8" >/dev/null || exit 1
    fi
}

# up_start MODEL ARGS...: starts `llorch up` in the background; sets UP_PID, UP_EP,
# UP_DIR (the run dir) and UP_ERR (its stderr file). Fails after 30 s without an endpoint.
up_start() {
    local model=$1; shift
    UP_ERR=$(mktemp /tmp/llorch-up-log-XXXXXX)
    UP_LOGS+=("$UP_ERR")
    local out; out=$(mktemp)
    "$LLORCH" up -m "$model" "$@" >"$out" 2>"$UP_ERR" &
    UP_PID=$!
    for _ in $(seq 300); do
        UP_EP=$(head -1 "$out")
        [ -n "$UP_EP" ] && break
        kill -0 "$UP_PID" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$out"
    if [ -z "$UP_EP" ]; then
        echo "llorch up did not come up:" >&2; tail -20 "$UP_ERR" >&2
        return 1
    fi
    UP_DIR=/tmp/llorch-$UP_PID
}

# up_stop [SIGNAL]: stops it and waits; returns its exit status, or 1 when a process
# reported a sanitizer error in the log.
up_stop() {
    kill -"${1:-TERM}" "$UP_PID" 2>/dev/null
    wait "$UP_PID"; local st=$?
    if grep -q "AddressSanitizer\|LeakSanitizer\|runtime error:" "$UP_ERR"; then
        grep -A20 "AddressSanitizer\|LeakSanitizer\|runtime error:" "$UP_ERR" | head -40 >&2
        st=1
    fi
    return $st
}

# same_output A B WHAT [TOL]: A and B, two `llorch generate --json --top N` outputs, have the
# same prompt tokens, tokens, text and stop reason, and top probabilities within TOL (1e-4;
# 0: as printed, to the digit); prints one line about WHAT and fails when they differ.
same_output() {
    python3 - "$1" "$2" "$3" "${4:-1e-4}" <<'PY'
import json, sys
a, b, what, tol = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4])
problems = [k for k in ("prompt_tokens", "tokens", "text", "stop_reason") if a[k] != b[k]]
if set(a) != set(b):
    problems.append("keys %s vs %s" % (sorted(a), sorted(b)))
dp = max((abs(x["p"] - y["p"]) for sa, sb in zip(a["top"], b["top"]) for x, y in zip(sa, sb)
          if x["id"] == y["id"]), default=0)
ids = all([x["id"] for x in sa] == [y["id"] for y in sb] for sa, sb in zip(a["top"], b["top"]))
if dp > tol or not ids:
    problems.append("top probabilities differ (max %g, ids equal %s)" % (dp, ids))
print("%-40s %s: %d tokens, %s" % (what, "same" if not problems else "DIFFERENT " + ", ".join(problems),
                                   len(b["tokens"]), b["stop_reason"]))
sys.exit(1 if problems else 0)
PY
}

# ready_at EP: waits up to 10 s until the router at EP reports a ready pipeline.
ready_at() {
    for _ in $(seq 100); do
        "$LLORCH" stats --router "$1" 2>/dev/null | grep -q '"pipelines_ready":1' && return 0
        sleep 0.1
    done
    echo "no pipeline became ready at $1"; return 1
}
