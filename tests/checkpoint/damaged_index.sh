#!/usr/bin/env bash
# A checkpoint whose index.json is valid JSON of the wrong shape is refused by origami-train
# (checkpoint.load, on every rank) and by every origami-ckpt subcommand that reads a checkpoint,
# each with exit status 1 (never an abort or a core dump) and a message naming index.json and
# the field. Ten damages: the top level or `tensors` of the wrong type, a missing or mistyped
# field, a piece's offsets outside the tensor, a shape of the wrong rank, `pieces` not an array,
# a checksum that is not a number, an unknown file, a file outside the checkpoint directory.
# usage: damaged_index.sh SOURCE_DIR BUILD_DIR MPIRUN...
set -euo pipefail
src=$1; build=$2; shift 2
work=$build/test-ckpt/damaged-index
source "$src/tests/checkpoint/tiny_job.sh"
ckpt=$build/src/origami-ckpt
"$@" -np 1 "$build/src/origami-train" "${common[@]}" --set training.train_steps=1 \
  --set "checkpoint.dir=$work/good" --set checkpoint.save_interval=1 \
  --set "logging.dir=$work/run" > "$work/train.log" 2>&1
good=$work/good/iter_0000001

damage() {  # damage NAME PYTHON-STATEMENT (on `ix`, the parsed index)
  rm -rf "$work/$1"; cp -r "$good" "$work/$1"
  python3 - "$work/$1/index.json" "$2" <<'PY'
import json, sys
path, stmt = sys.argv[1], sys.argv[2]
ix = json.load(open(path))
name = sorted(ix["tensors"])[0]
t = ix["tensors"][name]
p = t["pieces"][0]
exec(stmt)
json.dump(ix, open(path, "w"))
PY
}

expect_refused() {  # expect_refused CASE TEXT COMMAND...
  local case=$1 text=$2; shift 2
  set +e
  "$@" > "$work/out.txt" 2>&1
  local rc=$?
  set -e
  if [ $rc -ne 1 ]; then
    echo "$case: '$*' exited $rc (expected 1)"; cat "$work/out.txt"; exit 1
  fi
  if ! grep -q "index.json" "$work/out.txt" || ! grep -qF -- "$text" "$work/out.txt"; then
    echo "$case: '$*' did not name index.json and '$text':"; cat "$work/out.txt"; exit 1
  fi
}

cases=(
  "top_array|ix = []|expected an object at the top"
  "tensors_array|ix['tensors'] = list(ix['tensors'])|field 'tensors': expected an object"
  "missing_step|del ix['step']|missing field 'step'"
  "mistyped_step|ix['step'] = '3'|field 'step': expected an integer, found the string"
  "offsets_outside|p['offsets'][0] = t['global_shape'][0]|leaves the global shape"
  "shape_rank|p['shape'] = p['shape'] + [1]|must both have the tensor's"
  "pieces_object|t['pieces'] = {}|pieces': expected an array"
  "checksum_string|p['checksum_model'] = 'abc'|checksum_model': expected a non-negative integer"
  "unknown_file|p['file'] = 'rank_99999.h5'|does not exist"
  "outside_dir|p['file'] = '../index.json'|is not a file name inside the checkpoint directory"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name stmt text <<< "$c"
  damage "$name" "$stmt"
  bad=$work/$name
  expect_refused "$name" "$text" "$ckpt" inspect "$bad"
  expect_refused "$name" "$text" "$ckpt" diff "$good" "$bad"
  expect_refused "$name" "$text" "$ckpt" export-hf "$bad" "$work/hf-$name"
  expect_refused "$name" "$text" "$ckpt" reshard "$bad" "$work/rs-$name" --world 2 --set parallel.expert=2
  expect_refused "$name" "$text" "$ckpt" eval "$bad" --data "$data/brown_a_text_document" --samples 2
  expect_refused "$name" "$text" "$ckpt" logits "$bad" --tokens 1,2,3 --out "$work/logits.bin"
  expect_refused "$name" "$text" "$ckpt" upcycle "$bad" "$work/up-$name" --experts 4 --top-k 2
  expect_refused "$name" "$text" "$@" -np 1 "$build/src/origami-train" "${common[@]}" \
    --set training.train_steps=2 --set "checkpoint.load=$bad" --set "logging.dir=$work/resume"
done
# Every rank ends with 1 and says why: the ranks read the index independently and agree on the
# outcome, so each rank's message names every rank's reason (no rank is killed first, silent).
expect_refused two_ranks "missing field 'step'" "$@" -np 2 "$build/src/origami-train" "${common[@]}" \
  --set training.train_steps=2 --set "checkpoint.load=$work/missing_step" \
  --set "logging.dir=$work/resume2"
[ "$(grep -c "missing field 'step'" "$work/out.txt")" -ge 2 ] || {
  echo "two_ranks: not every rank named the field"; cat "$work/out.txt"; exit 1; }
echo "damaged index.json: ${#cases[@]} damages refused by origami-train and 7 origami-ckpt subcommands: ok"
