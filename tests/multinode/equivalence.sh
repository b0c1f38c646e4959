#!/usr/bin/env bash
# NODES nodes x 2 ranks train the default model through launch/train.sh --hostfile (TCP between
# the nodes, shared memory within), and every step's LM loss equals the 1-rank run's.
# usage: equivalence.sh SOURCE_DIR BUILD_DIR NAME NODES PARALLEL_SETS [MODEL_SETS]
# Each *_SETS is one word of space-separated key=value pairs; MODEL_SETS apply to both runs,
# PARALLEL_SETS to the multi-node run only. The run also saves a checkpoint every 3 steps to
# $work/ckpt (the cross-node resume test loads iter 3 of the 2-node run).
src=$1 build=$2 test_name=$3 nodes=$4
par=() model=()
for kv in $5; do par+=(--set "$kv"); done
for kv in ${6:-}; do model+=(--set "$kv"); done
source "$(dirname "$0")/lib.sh"
skip_unless_cluster
up "$nodes"
ranks=$((2 * nodes))
start=$(date +%s)
reference "${model[@]}"
train_on "$ranks" "$work/run.log" "${job[@]}" "${model[@]}" "${par[@]}" \
  --set "logging.dir=$work/run" --set "checkpoint.dir=$work/ckpt" --set checkpoint.save_interval=3 ||
  { tail -30 "$work/run.log"; fail "the $nodes-node run failed"; }
grep "placement:" "$work/run.log" | sed 's/.*placement/placement/'
# TP inside a node, EP across nodes, as the layout and --map-by slot promise.
grep -q "placement: $ranks ranks on $nodes nodes" "$work/run.log" || fail "ranks are not on $nodes nodes"
grep -q "placement: within a node: tp" "$work/run.log" || fail "TP is not inside a node"
grep -q "across nodes: .*ep (" "$work/run.log" || fail "EP does not span nodes"
! grep -q "warning.*placement" "$work/run.log" || fail "placement warning on a node-local TP layout"
# fp32 sums in another order (TP splits, EP all-to-all): same bound as tests/train's layout tests.
same_losses "$work/run/metrics.jsonl" "$work/ref/metrics.jsonl" 1e-5
echo "$nodes nodes x 2 ranks: $steps steps equal the 1-rank losses ($(( $(date +%s) - start )) s): ok"
