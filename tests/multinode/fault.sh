#!/usr/bin/env bash
# A fault on node 1 of 3 ends the whole job within 60 s with a message that names the rank or
# node and what was happening, a non-zero exit, no process left on any node, and the last
# checkpoint still loads (a 1-rank job resumes from it).
#   rank:  kill -9 one rank              node: kill -9 every process of the node (orted too)
#   cut:   drop the node's frames silently (nftables in the switch): OOB keepalive notices it
#   stop:  SIGSTOP one rank (alive, no progress): the collective watchdog notices it
# usage: fault.sh SOURCE_DIR BUILD_DIR rank|node|cut|stop
src=$1 build=$2 kind=$3 test_name=fault$3
source "$(dirname "$0")/lib.sh"
case $kind in rank|node|cut|stop) ;; *) fail "unknown fault '$kind' (rank, node, cut, stop)" ;; esac
skip_unless_cluster
up 3
bad=$cluster_name-n1
# The stop case relies on the watchdog (10 s here); the others must not: their bound is 45 s.
timeout_s=45; [ "$kind" = stop ] && timeout_s=10
model=(--set training.global_batch_size=12)   # DP3 below: 12 = micro 4 x 3
ckpt=$work/ckpt
train_on 6 "$work/run.log" "${model[@]}" --set training.train_steps=400 --set training.eval_interval=0 \
  --set logging.interval=1 --set parallel.tensor=2 --set parallel.sequence_parallel=true \
  --set parallel.expert=2 --set "logging.dir=$work/run" --set "checkpoint.dir=$ckpt" \
  --set checkpoint.save_interval=2 --set "training.collective_timeout_s=$timeout_s" &
job_pid=$!
wait_for "$ckpt/latest" 120 $job_pid || { kill $job_pid; tail -20 "$work/run.log"; fail "no checkpoint within 120 s (or the job ended first)"; }
sleep 1  # into the next steps
case $kind in
  rank) victim=$("${cluster[@]}" pids 1 origami-train | head -1); kill -9 "$victim" ;;
  node) "${cluster[@]}" kill 1 > /dev/null ;;
  cut)  "${cluster[@]}" cut 1 > /dev/null ;;
  stop) victim=$("${cluster[@]}" pids 1 origami-train | head -1); kill -STOP "$victim" ;;
esac
t0=$(date +%s.%N)
echo "fault '$kind' injected on $bad at $(date +%T)"
for ((t = 0; t < 900; t++)); do kill -0 $job_pid 2>/dev/null || break; sleep 0.1; done
kill -0 $job_pid 2>/dev/null && { kill -9 $job_pid; fail "the job is still running 90 s after the fault"; }
rc=0; wait $job_pid || rc=$?
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "job ended ${took} s after the fault, exit status $rc"
[ "$rc" -ne 0 ] || fail "the job exited 0 after a fault"
awk -v t="$took" 'BEGIN { exit !(t < 60) }' || fail "the job took $took s to end (bound 60 s)"
[ "$kind" = cut ] && "${cluster[@]}" heal 1 > /dev/null

# The message: who failed and what was happening.
show() { grep -E "$1" "$work/run.log" | head -${2:-3}; }
case $kind in
  rank) pat="process rank [0-9]+ with PID $victim on node $bad exited on signal 9" ;;
  # ORTE names the node it lost; when the node's daemon is killed, the agent (ssh) says so.
  node|cut) pat="Remote daemon: .* on node $bad|cluster agent: the session on node $bad .* ended" ;;
  stop) pat="collective watchdog: MPI_[A-Za-z_]+ on group '[a-z_]+' has not completed after [0-9]+ s .* during iteration [0-9]+" ;;
esac
grep -qE "$pat" "$work/run.log" || { tail -40 "$work/run.log"; fail "no message matching /$pat/"; }
show "$pat" 4
summary="launch/train.sh: job failed with exit status $rc; last logged iteration: [0-9]+; last checkpoint: $ckpt/iter_"
grep -qE "$summary" "$work/run.log" || { tail -20 "$work/run.log"; fail "no failure summary from launch/train.sh"; }
show "launch/train.sh: job failed" 1
show "ended by signal" 6 || true
# What the survivors were doing when the launcher ended them (the stopped case ends by the
# watchdog's own message above instead).
if [ "$kind" != stop ]; then
  grep -qE "origami-train \[rank [0-9]+ on $cluster_name-n[02]\]: ended by signal 15 at iteration [0-9]+" "$work/run.log" ||
    fail "no surviving rank said what it was doing when the job was ended"
fi

# Nothing left running on any node (bounded: the runtime's cleanup takes a few seconds).
for ((t = 0; t < 150; t++)); do
  left=""
  for i in 0 1 2; do left+=$("${cluster[@]}" pids $i origami-train; "${cluster[@]}" pids $i orted); done
  [ -z "$left" ] && break
  sleep 0.1
done
[ -z "$left" ] || fail "processes left after the job ended: $(ps -o pid,comm -p $(echo $left | tr ' ' ,) | tail -n +2 | tr '\n' ' ')"

# The last checkpoint still loads: one rank resumes from it for one step.
last=$(cat "$ckpt/latest"); it=$((10#${last#iter_}))
"$build/src/origami-ckpt" inspect "$ckpt" 2>&1 | grep "all checksums verified" > /dev/null ||
  fail "the last checkpoint $last does not verify"
"$build/src/origami-train" "$src/configs/default.yaml" "${model[@]}" --set training.train_steps=400 \
  --set training.eval_interval=0 --set "checkpoint.load=$ckpt" --set "logging.dir=$work/resume" \
  --set "training.train_steps=$((it + 1))" > "$work/resume.log" 2>&1 ||
  { tail "$work/resume.log"; fail "a 1-rank job cannot resume from $last"; }
grep -q "resumed from .*$last at iteration $it" "$work/resume.log" || fail "resume log lacks iteration $it"
echo "fault '$kind': job ended in $took s (exit $rc), no processes left, $last loads: ok"
