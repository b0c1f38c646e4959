#!/usr/bin/env python3
"""compare_losses.py A.jsonl B.jsonl REL [FIRST_ITER]: the LM loss of every iteration >= FIRST_ITER
in A (the last line logged for it: a restarted job logs some iterations twice) equals B's within
relative tolerance REL; both must log the same iterations. Prints the table."""
import json
import sys


def losses(path, first):
    out = {}
    with open(path) as f:
        for line in f:
            m = json.loads(line)
            if "lm_loss" in m and m["iteration"] >= first:
                out[m["iteration"]] = m["lm_loss"]
    return out


a_path, b_path, rel = sys.argv[1], sys.argv[2], float(sys.argv[3])
first = int(sys.argv[4]) if len(sys.argv) > 4 else 1
a, b = losses(a_path, first), losses(b_path, first)
if not a or sorted(a) != sorted(b):
    sys.exit(f"iterations differ: {sorted(a)} in {a_path} vs {sorted(b)} in {b_path}")
bad = 0
for it in sorted(a):
    d = abs(a[it] - b[it]) / abs(b[it])
    ok = d <= rel
    bad += not ok
    print(f"  iteration {it}: {a[it]:.9f} vs {b[it]:.9f} (rel {d:.1e}){'' if ok else '  <-- over ' + str(rel)}")
sys.exit(1 if bad else 0)
