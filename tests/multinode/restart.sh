#!/usr/bin/env bash
# launch/train.sh --max-restarts 1: node 1's processes are killed mid-run, the launcher
# relaunches from the checkpoint dir's `latest`, and the job finishes with exactly the losses of
# the uninterrupted run of the same layout (the 2-node equivalence run, multinode.eq2x2).
# usage: restart.sh SOURCE_DIR BUILD_DIR
src=$1 build=$2 test_name=restart
source "$(dirname "$0")/lib.sh"
skip_unless_cluster
uninterrupted=$build/test-multinode/eq2x2/run/metrics.jsonl
[ -f "$uninterrupted" ] || fail "no uninterrupted run at $uninterrupted (run multinode.eq2x2 first)"
up 2
"${cluster[@]}" run timeout -k 5 170 "$src/launch/train.sh" "$src/configs/default.yaml" -n 4 \
  --hostfile "$hostfile" --max-restarts 1 -- "${job[@]}" --set parallel.tensor=2 \
  --set parallel.sequence_parallel=true --set parallel.expert=4 --set "logging.dir=$work/run" \
  --set "checkpoint.dir=$work/ckpt" --set checkpoint.save_interval=2 > "$work/run.log" 2>&1 &
job_pid=$!
wait_for "$work/ckpt/latest" 120 $job_pid || { kill $job_pid; tail -20 "$work/run.log"; fail "no checkpoint within 120 s (or the job ended first)"; }
killed_after=$(cat "$work/ckpt/latest")
"${cluster[@]}" kill 1 > /dev/null
echo "killed node 1's processes after $killed_after was saved"
for ((t = 0; t < 1500; t++)); do kill -0 $job_pid 2>/dev/null || break; sleep 0.1; done
kill -0 $job_pid 2>/dev/null && { kill -9 $job_pid; fail "the job is still running 150 s after the kill"; }
rc=0; wait $job_pid || rc=$?
grep -E "launch/train.sh: (job failed|restart)|resumed from" "$work/run.log" | sed 's/.*\] //'
[ "$rc" -eq 0 ] || { tail -30 "$work/run.log"; fail "the restarted job exited $rc"; }
grep -q "launch/train.sh: restart 1 of 1: resuming from $work/ckpt/iter_" "$work/run.log" ||
  fail "no restart logged (did the kill land after the job had finished?)"
grep -qE "resumed from $work/ckpt/iter_[0-9]+ at iteration [0-9]+" "$work/run.log" || fail "the relaunch did not resume"
# Same layout, resumed from a checkpoint: bitwise the same losses (JSON keeps 17 digits).
same_losses "$work/run/metrics.jsonl" "$uninterrupted" 0
echo "killed mid-run, restarted from latest, finished with the uninterrupted losses: ok"
