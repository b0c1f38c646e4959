#!/usr/bin/env bash
# The collective watchdog on one host (no namespaces needed): one of 2 ranks is stopped
# (SIGSTOP) mid-run; the other's collective times out after training.collective_timeout_s = 5,
# it names the call, the group and the iteration, and the job ends with exit 75 within 60 s.
# usage: watchdog_one_host.sh SOURCE_DIR BUILD_DIR
src=$1 build=$2 test_name=watchdog
source "$(dirname "$0")/lib.sh"
"$src/launch/train.sh" "$src/configs/default.yaml" -n 2 -- --set training.train_steps=400 \
  --set training.eval_interval=0 --set logging.interval=1 --set parallel.expert=2 \
  --set training.collective_timeout_s=5 --set "logging.dir=$work/run" > "$work/run.log" 2>&1 &
job_pid=$!
wait_for "$work/run/metrics.jsonl" 120 $job_pid || { tail "$work/run.log"; fail "no iteration logged"; }
# This test's own ranks: the only origami-train processes writing to $work/run.
victim=$(pgrep -f "origami-train .*logging.dir=$work/run" | tail -1)
[ -n "$victim" ] || fail "no rank found to stop"
kill -STOP "$victim"
t0=$(date +%s.%N)
for ((t = 0; t < 600; t++)); do kill -0 $job_pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $job_pid 2>/dev/null; then kill -CONT "$victim"; kill $job_pid; fail "job still running 60 s after the stop"; fi
rc=0; wait $job_pid || rc=$?
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
pat="collective watchdog: MPI_[A-Za-z_]+ on group '[a-z_]+' has not completed after [0-9]+ s \(training.collective_timeout_s = 5\) during iteration [0-9]+"
grep -E "$pat" "$work/run.log" | head -2
[ "$rc" -eq 75 ] || { tail -20 "$work/run.log"; fail "exit status $rc, expected 75 (the watchdog's)"; }
grep -qE "$pat" "$work/run.log" || fail "no watchdog message"
pgrep -f "origami-train .*logging.dir=$work/run" > /dev/null && fail "ranks left running"
echo "stopped rank: the watchdog ended the job in $took s (exit 75): ok"
