# router_verify.sh - `llorch up --verify`: every worker checks the digests of its tensors in
# the loader's segment before it registers (its log says so), and the pipeline then serves
# the same greedy tokens as the in-process run.
. tests/pipeline/lib.sh
need_file "$STORIES"
up_start "$STORIES" --workers 2 --threads-per-worker 1 --verify || exit 1
args=(-m "$STORIES" -p "Once upon a time" -n 24 --temp 0 --json)
a=$("$LLORCH" generate --router "$UP_EP" "${args[@]}") || { up_stop; exit 1; }
up_stop || exit 1
rc=0
n=$(grep -c "verified .* tensors in the segment" "$UP_ERR")
[ "$n" -eq 2 ] || { echo "expected 2 workers to verify their tensors, saw $n:"; tail -20 "$UP_ERR"; rc=1; }
b=$("$LLORCH" generate --in-process --threads 1 "${args[@]}") || exit 1
python3 - "$a" "$b" <<'PY' || rc=1
import json, sys
a, b = (json.loads(s) for s in sys.argv[1:3])
if a["tokens"] != b["tokens"]:
    print("verify: the pipeline's tokens differ from in-process:", a["tokens"], b["tokens"])
    sys.exit(1)
print("verify: 2 workers checked their digests; %d tokens equal in-process" % len(a["tokens"]))
PY
rm -f "$UP_ERR"
exit $rc
