# router_concurrent.sh - eight concurrent sessions with different prompts get the same text as
# each alone, and the router's stats show batches of more than one row; llorch_cancel from
# another thread and a callback's non-zero return both end a request as cancelled.
. tests/pipeline/lib.sh
need_file "$STORIES"
up_start "$STORIES" --workers 2 --threads-per-worker 1 || exit 1
"$POKE" concurrent "$UP_EP" 48 "Once upon a time" "The cat sat" "Lily wanted to" \
    "One day, a little boy" "Tom and Sue went" "The sun was hot" "A big dog" "She was happy"
rc=$?
"$POKE" cancel "$UP_EP" || rc=1
up_stop || { echo "llorch up did not exit cleanly"; rc=1; }
exit $rc
