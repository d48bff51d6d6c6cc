# router_layout.sh - `llorch up --layout rows` has the loader keep the GGUF row order (it says
# so), and the pipeline then computes as the in-process run on the file's rows (--mmap): the
# same tokens and top probabilities to the last printed digit, on a generated GQA Q8_0 model;
# the default layout gives the in-process output with placed weights (repacked where the CPU
# wants it). On a CPU with AVX-512 VNNI the two in-process outputs differ in those digits, so
# the comparison tells the layouts apart. A bad --layout is refused before anything starts.
. tests/pipeline/lib.sh
make_gqa_q8
prompt="The quick brown fox jumps over the lazy dog"
rc=0
gen() { "$LLORCH" generate -p "$prompt" -n 24 --temp 0 --top 3 --json "$@"; }
rows=$(gen -m "$GQA_Q8" --threads 1 --mmap) || exit 1
placed=$(gen -m "$GQA_Q8" --threads 1) || exit 1
if grep -q avx512_vnni /proc/cpuinfo && same_output "$rows" "$placed" "rows = placed?" 0 >/dev/null; then
    echo "in-process, the file's rows and the repacked weights give the same digits on this"
    echo "AVX-512 VNNI CPU: the layouts cannot be told apart by their output"; rc=1
fi
for layout in rows auto; do
    up_start "$GQA_Q8" --workers 2 --threads-per-worker 1 --layout "$layout" || exit 1
    if [ "$layout" = rows ] && ! grep -q "keeps the GGUF row order (--layout rows)" "$UP_ERR"; then
        echo "the loader did not say it keeps the rows:"; tail -5 "$UP_ERR"; rc=1
    fi
    out=$(gen -m "$GQA_Q8" --router "$UP_EP") || { echo "generate through the router failed"; rc=1; }
    want=$placed
    [ "$layout" = rows ] && want=$rows
    same_output "$want" "$out" "--layout $layout" 0 || rc=1
    up_stop || { echo "llorch up did not exit cleanly"; rc=1; }
done
msg=$("$LLORCH" up -m "$GQA_Q8" --layout columns 2>&1); st=$?
if [ $st -ne 2 ] || ! grep -q "give auto or rows" <<<"$msg"; then
    echo "--layout columns: exit $st, '$msg' (want 2 and a message naming auto and rows)"; rc=1
fi
exit $rc
