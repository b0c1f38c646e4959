#!/usr/bin/env bash
# origami-plan end to end on a tiny job (H 32, 2 layers, 4 experts, seq 32, batch 8) for 8 ranks:
# the top choice's overlay trains 2 steps under launch/train.sh, and so does the last-ranked
# layout (1 step: everything the planner accepts starts); for both, the planner's memory figure is
# within 10 % of the largest allocator peak of any rank (metrics.jsonl's peak_mib_max). Bad inputs
# exit 1 naming what to change.
# usage: plan_cli.sh SOURCE_DIR BUILD_DIR MPIRUN...   (launch/train.sh brings its own mpirun)
set -euo pipefail
src=$1; build=$2; shift 2
work=$build/test-plan/cli
source "$src/tests/checkpoint/tiny_job.sh"
plan=$build/src/origami-plan
cluster=$src/configs/clusters/cpu-2core-8ranks.yaml
export ORIGAMI_TRAIN=$build/src/origami-train
cd "$src"

"$plan" default --world 8 --cluster "$cluster" "${common[@]}" --overlay "$work/best.overlay" \
  --csv "$work/plan.csv" --explain --top 5 | tee "$work/plan.txt"
grep -q -- "--set parallel.tensor=" "$work/best.overlay"
grep -q "communication per step" "$work/plan.txt"

# shellcheck disable=SC2046  # the overlay is one --set KEY=VALUE per word
launch/train.sh default -n 8 -- "${common[@]}" $(cat "$work/best.overlay") \
  --set training.train_steps=2 --set "logging.dir=$work/run-best" > "$work/train-best.log" 2>&1 ||
  { cat "$work/train-best.log"; exit 1; }
grep -q '"iteration":2' "$work/run-best/metrics.jsonl"

last=$(tail -1 "$work/plan.csv" | awk -F, '{print $NF}')
sets=(); for a in $last; do sets+=(--set "$a"); done
launch/train.sh default -n 8 -- "${common[@]}" "${sets[@]}" --set training.train_steps=1 \
  --set "logging.dir=$work/run-last" > "$work/train-last.log" 2>&1 ||
  { echo "last-ranked layout failed: $last"; cat "$work/train-last.log"; exit 1; }

# memory_within_10_percent PLAN_ROW RUN_DIR: the row's memory_mib (CSV field 14) against the run.
memory_within_10_percent() {
  local planned peak
  planned=$(echo "$1" | awk -F, '{print $14}')
  peak=$(tail -1 "$2/metrics.jsonl" | grep -o '"peak_mib_max":[0-9.eE+-]*' | cut -d: -f2)
  [ -n "$peak" ] || { echo "no peak_mib_max in $2/metrics.jsonl"; exit 1; }
  awk -v p="$planned" -v m="$peak" 'BEGIN { r = p / m; exit !(r > 0.9 && r < 1.1) }' ||
    { echo "planned $planned MiB against a peak of $peak MiB ($2)"; exit 1; }
  echo "memory: planned $planned MiB, largest peak $peak MiB"
}
memory_within_10_percent "$(sed -n 2p "$work/plan.csv")" "$work/run-best"
memory_within_10_percent "$(tail -1 "$work/plan.csv")" "$work/run-last"

expect_error() {  # expect_error TEXT CMD...: exit 1 and TEXT in stderr
  local text=$1; shift
  local rc=0
  "$@" > "$work/err.out" 2> "$work/err.txt" || rc=$?
  [ "$rc" -eq 1 ] || { echo "expected exit 1, got $rc: $*"; cat "$work/err.txt"; exit 1; }
  grep -qF -- "$text" "$work/err.txt" || { echo "expected '$text' in:"; cat "$work/err.txt"; exit 1; }
}
expect_error "no parallel layout is valid for --world 7" \
  "$plan" default --world 7 --cluster "$cluster" "${common[@]}" --overlay "$work/x"
sed '/^intra_node:/s/, latency_us: [^}]*}/}/' "$cluster" > "$work/broken.yaml"
expect_error "missing field 'latency_us'" \
  "$plan" default --world 8 --cluster "$work/broken.yaml" "${common[@]}" --overlay "$work/x"
sed 's/^device_memory_gib: .*/device_memory_gib: 0.0001/' "$cluster" > "$work/small.yaml"
expect_error "does not fit" \
  "$plan" default --world 8 --cluster "$work/small.yaml" "${common[@]}" --overlay "$work/x"
echo "plan cli: ok"
