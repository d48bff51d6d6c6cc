# router_cleanup.sh - after `llorch up` is stopped (SIGTERM or SIGINT) no /dev/shm/llorch-*
# segment, no process and no run directory of it is left; when a child dies early, up says
# which and stops the rest.
. tests/pipeline/lib.sh
need_file "$STORIES"
rc=0
for sig in TERM INT; do
    up_start "$STORIES" --workers 3 || exit 1
    kids=$(pgrep -P "$UP_PID" | tr '\n' ' ')
    [ "$(echo $kids | wc -w)" -eq 5 ] || { echo "expected 5 children, got: $kids"; rc=1; }
    segs=$(ls /dev/shm | grep -c "^llorch-.*-$(pgrep -P "$UP_PID" -f llorch-loader)\$")
    [ "$segs" -eq 1 ] || { echo "expected the loader's segment in /dev/shm"; rc=1; }
    up_stop $sig || { echo "llorch up exited non-zero after SIG$sig"; rc=1; }
    for p in $kids; do
        if kill -0 "$p" 2>/dev/null; then echo "process $p left after SIG$sig"; rc=1; fi
    done
    for p in $kids; do
        if ls /dev/shm | grep -q "^llorch-.*-$p\$"; then echo "segment of $p left"; rc=1; fi
    done
    [ -e "$UP_DIR" ] && { echo "run dir $UP_DIR left after SIG$sig"; rc=1; }
done
# A worker killed: up names it, stops the others and exits 1.
up_start "$STORIES" --workers 2 || exit 1
kids=$(pgrep -P "$UP_PID" | tr '\n' ' ')
kill -KILL "$(pgrep -P "$UP_PID" -f 'llorch-worker.*--layers 0:')"
wait "$UP_PID"; st=$?
[ $st -eq 1 ] || { echo "llorch up exited $st after a worker died (expected 1)"; rc=1; }
grep -q "worker 0 (layers 0:3).*killed by signal 9" "$UP_ERR" || { echo "up did not name the dead worker:"; tail -5 "$UP_ERR"; rc=1; }
for p in $kids; do
    if kill -0 "$p" 2>/dev/null; then echo "process $p left after a worker died"; rc=1; fi
done
[ -e "$UP_DIR" ] && { echo "run dir left after a worker died"; rc=1; }
ls /dev/shm | grep -q "^llorch-" && { echo "segments in /dev/shm: $(ls /dev/shm | grep ^llorch-)"; }
exit $rc
