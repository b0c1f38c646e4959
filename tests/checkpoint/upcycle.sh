#!/usr/bin/env bash
# Sparse upcycling end to end: train a dense model (moe.num_experts 0) 2 steps on 2 ranks and
# save; upcycle it to 4 experts top-2 with no noise; the MoE model's logits equal the dense
# model's (each expert is the dense MLP, renormalised weights sum to 1); then train the MoE
# model from that checkpoint with EP2.
# usage: upcycle.sh SOURCE_DIR BUILD_DIR MPIRUN...
set -euo pipefail
src=$1; build=$2; shift 2
work=$build/test-ckpt/upcycle
source "$src/tests/checkpoint/tiny_job.sh"
"$@" -np 2 "$build/src/origami-train" "${common[@]}" --set moe.num_experts=0 \
  --set training.train_steps=2 --set checkpoint.save_interval=2 --set "checkpoint.dir=$work/dense" \
  --set "logging.dir=$work/run-dense"
"$build/src/origami-ckpt" upcycle "$work/dense" "$work/moe" --experts 4 --top-k 2
tokens=5,17,300,2,8000,45,99,1000
"$build/src/origami-ckpt" logits "$work/dense" --tokens "$tokens" --out "$work/dense.bin"
"$build/src/origami-ckpt" logits "$work/moe" --tokens "$tokens" --out "$work/moe.bin"
/usr/bin/python3 - "$work/dense.bin" "$work/moe.bin" <<'PY'
import sys
import numpy as np
a, b = (np.fromfile(p, dtype="<f4") for p in sys.argv[1:3])
diff, scale = float(np.abs(a - b).max()), float(np.abs(a).max())
print(f"upcycled vs dense logits: max |difference| {diff:.3g} (max |logit| {scale:.3g})")
# sum_s w_s y with sum_s w_s = 1 in fp32: a few ulps of the activations, not exact
sys.exit(0 if diff <= 1e-5 * scale + 1e-6 else 1)
PY
"$@" -np 2 "$build/src/origami-train" "${common[@]}" --set moe.num_experts=4 \
  --set moe.expert_ffn_hidden_size=64 --set parallel.expert=2 --set training.train_steps=2 \
  --set "checkpoint.load=$work/moe" --set "logging.dir=$work/run-moe"
echo "upcycle: ok"
