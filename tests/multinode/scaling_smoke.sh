#!/usr/bin/env bash
# tools/scaling on the local cluster, smallest series (1 and 2 nodes, weak, 3 steps, links
# shaped): the table has both points with sane numbers, the CSV and the plot exist; and the
# projection runs and writes its table and plot.
# usage: scaling_smoke.sh SOURCE_DIR BUILD_DIR
src=$1 build=$2 test_name=scaling
source "$(dirname "$0")/lib.sh"
skip_unless_cluster
# The tools run with the system python (their #! line), where tools/setup.sh puts matplotlib.
/usr/bin/python3 -c "import matplotlib" 2> /dev/null ||
  { echo "SKIP: /usr/bin/python3 has no matplotlib (tools/setup.sh installs python3-matplotlib)"; exit 77; }
"$src/tools/scaling/scaling.py" --nodes 1,2 --steps 3 --series weak --shape 200mbit \
  --build "$build" --out "$work/out" > "$work/scaling.log" 2>&1 || { tail -20 "$work/scaling.log"; fail "scaling.py failed"; }
cat "$work/out/scaling.md"
for n in 1 2; do
  grep -qE "^\| weak \| $n \| $((2 * n)) \| TP2 DP$n EP$((2 * n)) \| $((8 * n)) \| [0-9]+ \| [0-9]+ \| [0-9.]+ \| [0-9]+% \| [0-9.]+ \|$" \
    "$work/out/scaling.md" || fail "no sane row for $n nodes"
done
[ -s "$work/out/weak.png" ] && [ -s "$work/out/scaling.csv" ] || fail "plot or CSV missing"
# The shaped inter-node link shows up as time in collectives: 2 nodes spend a larger share there
# than 1 node, whose traffic never leaves shared memory (measured: 78% vs 13%).
share() { awk -F'|' -v n="$1" '$3 + 0 == n { gsub(/[ %]/, "", $10); print $10 }' "$work/out/scaling.md"; }
[ "$(share 2)" -gt "$(share 1)" ] || fail "comm share on 2 shaped nodes ($(share 2)%) not above 1 node's ($(share 1)%)"
"$src/tools/scaling/project.py" --match 468@64 --out "$work/out" > "$work/project.log" 2>&1 ||
  { cat "$work/project.log"; fail "project.py failed"; }
grep -q "| weak | 64 | 16 | 256 | .* | 468 |" "$work/out/projection.md" || fail "the calibration point is not 468 TFLOP/s at 64 GPUs"
[ -s "$work/out/projection.png" ] || fail "projection plot missing"
echo "scaling: table, CSV and plots on the local cluster; projection calibrated to 468@64: ok"
