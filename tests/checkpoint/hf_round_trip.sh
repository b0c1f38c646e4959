#!/usr/bin/env bash
# End to end through the real binaries: train 2 steps on 2 ranks with EP2 and save; inspect;
# export to a Hugging Face (Mixtral) directory in F32; import it back; the imported checkpoint's
# weights must equal the saved ones bit for bit; PyTorch's Mixtral forward on the export gives
# Origami's logits; training resumes from the import; an offline reshard to EP4 keeps every
# tensor and a 4-rank job resumes from it (also as PP2 x TP2, whose checkpoint exports to HF with
# the golden logits); the same export/import/golden with Qwen2-MoE naming
# for a model with a shared expert and a dense layer.
# usage: hf_round_trip.sh SOURCE_DIR BUILD_DIR MPIRUN...
set -euo pipefail
src=$1; build=$2; shift 2
work=$build/test-ckpt/hf-round-trip
source "$src/tests/checkpoint/tiny_job.sh"
"$@" -np 2 "$build/src/origami-train" "${common[@]}" --set parallel.expert=2 \
  --set training.train_steps=2 --set checkpoint.save_interval=2 --set "checkpoint.dir=$work/ckpt" \
  --set "logging.dir=$work/run1"
"$build/src/origami-ckpt" inspect "$work/ckpt" | tee "$work/inspect.txt"
grep -q "all checksums verified" "$work/inspect.txt"
"$build/src/origami-ckpt" export-hf "$work/ckpt" "$work/hf" --dtype F32
test -f "$work/hf/config.json" && test -f "$work/hf/model.safetensors"
"$build/src/origami-ckpt" import-hf "$work/hf" "$work/imported"
"$build/src/origami-ckpt" diff "$work/ckpt" "$work/imported"
# Golden: the exported tensors run through a PyTorch re-implementation of Mixtral's forward give
# Origami's logits (Debian's python3-torch; /usr/bin/python3, not any other interpreter on PATH).
tokens=5,17,300,2,8000,45,99,1000,7,7,7,123,4567,8191,0,42
"$build/src/origami-ckpt" logits "$work/ckpt" --tokens "$tokens" --out "$work/logits.bin"
/usr/bin/python3 "$src/tests/checkpoint/mixtral_reference.py" "$work/hf" "$tokens" "$work/logits.bin"
"$@" -np 2 "$build/src/origami-train" "${common[@]}" --set training.train_steps=3 \
  --set "checkpoint.load=$work/imported" --set "logging.dir=$work/run2"
# Offline reshard of the EP2 checkpoint for 4 ranks with EP4 and ZeRO-1: same weights and
# moments (diff), one file per expert shard, and a 4-rank job resumes from it.
"$build/src/origami-ckpt" reshard "$work/ckpt" "$work/resharded" --world 4 \
  --set parallel.expert=4 --set optimizer.distributed=true 2>/dev/null && exit 1  # only parallel.*
"$build/src/origami-ckpt" reshard "$work/ckpt" "$work/resharded" --world 4 --set parallel.expert=4
"$build/src/origami-ckpt" diff "$work/ckpt" "$work/resharded"
test -f "$work/resharded/iter_0000002/rank_00003.h5"
"$@" -np 4 "$build/src/origami-train" "${common[@]}" --set parallel.expert=4 \
  --set training.train_steps=3 --set "checkpoint.load=$work/resharded" --set "logging.dir=$work/run3"
# Reshard for TP4 with sequence parallelism (4 heads / 2 kv heads: each kv head shared by two
# ranks, stored once): same tensors, and a 4-rank TP job resumes from it.
tp4=(--set parallel.tensor=4 --set parallel.sequence_parallel=true)
"$build/src/origami-ckpt" reshard "$work/ckpt" "$work/resharded-tp4" --world 4 "${tp4[@]}"
"$build/src/origami-ckpt" diff "$work/ckpt" "$work/resharded-tp4"
"$@" -np 4 "$build/src/origami-train" "${common[@]}" "${tp4[@]}" \
  --set training.train_steps=3 --set "checkpoint.load=$work/resharded-tp4" --set "logging.dir=$work/run-tp4"
# Pipeline parallelism: reshard for PP2 x TP2 (each stage's layers on its ranks), same tensors;
# a 4-rank PP2 x TP2 job resumes from it and saves; that checkpoint exports to Hugging Face and
# PyTorch's forward on the export gives Origami's logits of it.
pp2=(--set parallel.pipeline=2 --set parallel.tensor=2 --set parallel.sequence_parallel=true)
"$build/src/origami-ckpt" reshard "$work/ckpt" "$work/resharded-pp2" --world 4 "${pp2[@]}"
"$build/src/origami-ckpt" diff "$work/ckpt" "$work/resharded-pp2"
"$@" -np 4 "$build/src/origami-train" "${common[@]}" "${pp2[@]}" \
  --set training.train_steps=3 --set "checkpoint.load=$work/resharded-pp2" \
  --set checkpoint.save_interval=3 --set "checkpoint.dir=$work/ckpt-pp2" --set "logging.dir=$work/run-pp2"
"$build/src/origami-ckpt" inspect "$work/ckpt-pp2" > "$work/inspect-pp2.txt"
grep -q "all checksums verified" "$work/inspect-pp2.txt"
"$build/src/origami-ckpt" export-hf "$work/ckpt-pp2" "$work/hf-pp2" --dtype F32
"$build/src/origami-ckpt" logits "$work/ckpt-pp2" --tokens "$tokens" --out "$work/logits-pp2.bin"
/usr/bin/python3 "$src/tests/checkpoint/mixtral_reference.py" "$work/hf-pp2" "$tokens" "$work/logits-pp2.bin"
# Qwen2-MoE naming for a model Mixtral cannot express: a shared expert and a dense layer.
qwen=(--set moe.shared_expert_ffn_hidden_size=32 --set moe.layer_freq=2)
"$@" -np 2 "$build/src/origami-train" "${common[@]}" "${qwen[@]}" --set training.train_steps=1 \
  --set checkpoint.save_interval=1 --set "checkpoint.dir=$work/qckpt" --set "logging.dir=$work/qrun"
"$build/src/origami-ckpt" export-hf "$work/qckpt" "$work/qhf" 2>/dev/null && exit 1  # Mixtral refuses
"$build/src/origami-ckpt" export-hf "$work/qckpt" "$work/qhf" --format qwen2_moe --dtype F32
"$build/src/origami-ckpt" import-hf "$work/qhf" "$work/qimported"
"$build/src/origami-ckpt" diff "$work/qckpt" "$work/qimported"
"$build/src/origami-ckpt" logits "$work/qckpt" --tokens "$tokens" --out "$work/qlogits.bin"
/usr/bin/python3 "$src/tests/checkpoint/qwen2_moe_reference.py" "$work/qhf" "$tokens" "$work/qlogits.bin"
# Evaluation at any k (SMoE-Dropout): the trained k is the default, other k route differently,
# and a k the model cannot route is refused by name.
ev() {
  "$build/src/origami-ckpt" eval "$work/ckpt" --data "$data/brown_a_text_document" --samples 16 \
    "$@" > "$work/eval.txt" 2>&1
  sed -nE 's/.*mean loss ([0-9.]+).*/\1/p' "$work/eval.txt"
}
[ "$(ev)" = "$(ev --top-k 2)" ]
[ "$(ev --top-k 1)" != "$(ev --top-k 2)" ] && [ "$(ev --top-k 4)" != "$(ev --top-k 2)" ]
if "$build/src/origami-ckpt" eval "$work/ckpt" --data "$data/brown_a_text_document" --samples 16 \
    --top-k 5 > "$work/eval-k5.txt" 2>&1; then exit 1; fi
grep -q -- "--top-k 5" "$work/eval-k5.txt"
echo "hf round trip: ok"
