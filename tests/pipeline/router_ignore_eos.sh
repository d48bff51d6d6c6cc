# router_ignore_eos.sh - a request with ignore_eos goes past the EOS token through the pipeline
# (EOS is then an ordinary token) and makes all its max_tokens; without it the same request
# stops at that EOS. A random model with a small vocabulary, sampled at a high temperature
# with a fixed seed, draws EOS (id 2) early.
. tests/pipeline/lib.sh
MODEL=build/test-models/pipe-eos.gguf
if [ ! -f "$MODEL" ]; then
    mkdir -p "$(dirname "$MODEL")"
    "$LLORCH" mkmodel --dim 64 --layers 2 --heads 4 --ffn 128 --vocab-size 1690 --ctx 4096 \
        --out "$MODEL" --quiet >/dev/null || exit 1
fi
up_start "$MODEL" --workers 2 --threads-per-worker 1 || exit 1
args=(--router "$UP_EP" -m "$MODEL" -p "hello" -n 1000 --temp 20 --top-k 0 --top-p 1 --min-p 0
      --seed 1 --json)
a=$("$LLORCH" generate "${args[@]}" --ignore-eos) || { up_stop; exit 1; }
b=$("$LLORCH" generate "${args[@]}") || { up_stop; exit 1; }
up_stop || exit 1
python3 - "$a" "$b" <<'PY'
import json, sys
a, b = (json.loads(s) for s in sys.argv[1:3])
problems = []
eos_at = a["tokens"].index(2) if 2 in a["tokens"] else -1
if eos_at < 0:
    problems.append("the run never drew EOS: the test proves nothing")
if a["stop_reason"] != "length" or len(a["tokens"]) != 1000:
    problems.append("with ignore_eos: %s after %d tokens" % (a["stop_reason"], len(a["tokens"])))
if b["stop_reason"] != "eos" or b["tokens"] != a["tokens"][:eos_at]:
    problems.append("without ignore_eos: %s after %d tokens (EOS is token %d)"
                    % (b["stop_reason"], len(b["tokens"]), eos_at))
print("ignore_eos: " + ("; ".join(problems) if problems else
                        "went past EOS at token %d to 1000 tokens; without it, stopped there"
                        % eos_at))
sys.exit(1 if problems else 0)
PY
