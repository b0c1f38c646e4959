#!/usr/bin/env bash
# The routers' expert bias (a checkpoint buffer) through origami-ckpt: train 2 steps on 2 ranks
# (EP2, expert_bias on) and save -> inspect lists the buffers -> reshard to 1 rank keeps them
# (diff compares buffers too) -> export-hf refuses a router Mixtral cannot express -> a 1-rank
# job resumes from the resharded checkpoint with the bias loaded (no "starts from zeros").
# usage: router_buffers.sh SOURCE_DIR BUILD_DIR MPIRUN...
set -euo pipefail
src=$1; build=$2; shift 2
work=$build/test-ckpt/router-buffers
source "$src/tests/checkpoint/tiny_job.sh"
common+=(--set "moe.router.expert_bias=true" --set "moe.router.bias_update_rate=0.01")
ckpt=$build/src/origami-ckpt
"$@" -np 2 "$build/src/origami-train" "${common[@]}" --set training.train_steps=2 \
  --set parallel.expert=2 --set "checkpoint.dir=$work/ckpt" --set checkpoint.save_interval=2 \
  --set "logging.dir=$work/run1" > "$work/train.log" 2>&1
"$ckpt" inspect "$work/ckpt" > "$work/inspect.txt"
grep -q "^format version  2" "$work/inspect.txt"
grep -q "layers.1.moe.router.expert_bias .*(buffer)" "$work/inspect.txt"
grep -q "2 buffers; all checksums verified" "$work/inspect.txt"
"$ckpt" reshard "$work/ckpt" "$work/resharded" --world 1 --set parallel.expert=1 > /dev/null
"$ckpt" diff "$work/ckpt" "$work/resharded" | tee "$work/diff.txt"
grep -q "0 of 23 tensors differ" "$work/diff.txt"  # 21 parameters (q, k, v apart) + 2 buffers
if "$ckpt" export-hf "$work/ckpt" "$work/hf" > "$work/export.txt" 2>&1; then
  echo "export-hf accepted a router with an expert bias"; exit 1
fi
grep -q "expert_bias" "$work/export.txt"
"$@" -np 1 "$build/src/origami-train" "${common[@]}" --set training.train_steps=3 \
  --set "checkpoint.load=$work/resharded" --set "logging.dir=$work/run2" > "$work/resume.log" 2>&1
grep -q "resumed from .*iter_0000002 at iteration 2" "$work/resume.log"
if grep -q "starts from zeros" "$work/resume.log"; then echo "the bias was not loaded"; exit 1; fi
echo "router buffers: saved, inspected, resharded, refused by export-hf, resumed: ok"
