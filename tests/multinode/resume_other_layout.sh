#!/usr/bin/env bash
# A checkpoint saved on 2 nodes (TP2 DP2 EP4, iteration 3 of the 2-node equivalence run) resumes
# on 3 nodes with another layout (TP2 inside each node, a 3-stage pipeline across the nodes, EP2)
# and the remaining steps' losses equal the uninterrupted 1-rank run's.
# usage: resume_other_layout.sh SOURCE_DIR BUILD_DIR
src=$1 build=$2 test_name=resume
source "$(dirname "$0")/lib.sh"
skip_unless_cluster
saved=$build/test-multinode/eq2x2
[ -f "$saved/ckpt/iter_0000003/index.json" ] || fail "no checkpoint of the 2-node run at $saved/ckpt (run multinode.eq2x2 first)"
up 3
train_on 6 "$work/run.log" "${job[@]}" --set "checkpoint.load=$saved/ckpt/iter_0000003" \
  --set parallel.tensor=2 --set parallel.sequence_parallel=true --set parallel.pipeline=3 \
  --set parallel.pipeline_first_stage_layers=2 --set parallel.expert=2 \
  --set "logging.dir=$work/run" || { tail -30 "$work/run.log"; fail "the 3-node resume failed"; }
grep -q "resumed from .*iter_0000003 at iteration 3" "$work/run.log" || fail "did not resume at iteration 3"
grep -q "placement: 6 ranks on 3 nodes" "$work/run.log" || fail "ranks are not on 3 nodes"
grep "placement:" "$work/run.log" | sed 's/.*placement/placement/'
same_losses "$work/run/metrics.jsonl" "$saved/ref/metrics.jsonl" 1e-5 4
echo "saved on 2 nodes (TP2 DP2 EP4), resumed on 3 nodes (TP2 PP3 EP2): iterations 4-$steps equal the 1-rank run: ok"
