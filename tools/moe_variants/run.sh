#!/usr/bin/env bash
# Trains the default job (configs/default.yaml: 300 steps on the shipped Brown data) once per MoE
# variant of docs/moe.md "Variants", each in runs/variants/<name>, then writes the table and the
# plot with tools/moe_variants/table.py. Usage: tools/moe_variants/run.sh [-n RANKS] [NAME ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
ranks=2
if [ "${1:-}" = "-n" ]; then ranks=$2; shift 2; fi
declare -A sets=(
  [vanilla]=""
  [moepp]="--set moe.zero_compute_experts.zero=1 --set moe.zero_compute_experts.copy=1 --set moe.zero_compute_experts.constant=2"
  [adamoe]="--set moe.null_experts=8 --set moe.top_k=3"
  [rmoe]="--set moe.router.kind=recurrent --set moe.router.recurrent_dim=64"
  [gating_residual]="--set moe.router.gating_residual=true"
  [frozen]="--set moe.router.freeze=true --set moe.router.load_balance=none"
  [residual]="--set moe.residual=true --set moe.top_k=1"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(vanilla moepp adamoe rmoe gating_residual frozen residual)
for name in "${names[@]}"; do
  [ -n "${sets[$name]+x}" ] || { echo "run.sh: unknown variant '$name' (known: ${!sets[*]})" >&2; exit 2; }
  rm -rf "runs/variants/$name"
  echo "== $name: ${sets[$name]:-(the default job)}"
  # shellcheck disable=SC2086
  launch/train.sh configs/default.yaml -n "$ranks" -- --set logging.dir=runs/variants/$name ${sets[$name]} \
    > "runs/variants-$name.log" 2>&1 || { echo "run.sh: $name failed; see runs/variants-$name.log" >&2; exit 1; }
done
# Debian's python3 has matplotlib (tools/setup.sh); a pyenv or venv python3 on PATH may not.
py=$(command -v /usr/bin/python3 || command -v python3)
"$py" tools/moe_variants/table.py runs/variants
