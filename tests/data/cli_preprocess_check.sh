#!/usr/bin/env bash
# End-to-end check of the origami-data CLI: preprocess a JSONL file with the shipped tokenizer and
# compare every document's ids (inspect --ids, EOD stripped) with spm_encode's own output.
# usage: cli_preprocess_check.sh <origami-data> <source dir> <work dir>
set -euo pipefail
bin="$1"; src="$2"; work="$3"
model="$src/data/brown/tokenizer.model"
rm -rf "$work" && mkdir -p "$work"
python3 - "$work" <<'PY'
import json, sys
texts = ["It was a bright cold day in April, and the clocks were striking thirteen.",
         "Digits 2024 and symbols #@% & unicode é ü 中文.",
         "Short.", "Tabs\tand  double  spaces stay."]
with open(sys.argv[1] + "/in.jsonl", "w") as f:
    for t in texts: f.write(json.dumps({"body": t}) + "\n")
with open(sys.argv[1] + "/in.txt", "w") as f:
    for t in texts: f.write(t + "\n")
PY
"$bin" preprocess --input "$work/in.jsonl" --json-key body --output-prefix "$work/ds" \
  --tokenizer-model "$model" --workers 2
"$bin" inspect "$work/ds" --tokenizer-model "$model" --documents 100 --ids \
  | awk '/^  ids:/ {sub(/^  ids: /, ""); NF--; print}' > "$work/ours.txt"   # NF--: drop EOD
spm_encode --model="$model" --output_format=id < "$work/in.txt" > "$work/spm.txt"
diff -u "$work/spm.txt" "$work/ours.txt"
echo "origami-data preprocess ids match spm_encode ($(wc -l < "$work/spm.txt") documents)"
