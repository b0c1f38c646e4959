#!/usr/bin/env bash
# Pipeline bubble and per-stage memory on the CPU backend (a benchmark, not a test: it prints
# figures and never fails on them): the default model (4 layers) over PP 1, 2 and 4 ranks, one
# rank per stage, m = 4, 8 and 16 micro-batches of one sequence per step, under 1F1B; for each,
# the measured bubble (idle over compute, per stage, last logged step) against (p-1)/m, the step
# time and each stage's allocator peak. Extra arguments go to origami-train (e.g. --set ...).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin=$here/${ORIGAMI_BUILD_DIR:-build}/src/origami-train
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# $(date -u +%F) $(nproc --all) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-4s %-4s %-10s %-34s %-8s %s\n' PP m "ms/iter" "bubble per stage (measured)" theory "peak MiB per stage"
for pp in ${PIPELINE:-1 2 4}; do
  for m in ${MICRO_BATCHES:-4 8 16}; do
    log=$out/pp$pp-m$m.log
    mpirun -np "$pp" --oversubscribe --bind-to none --mca btl self,vader \
      --mca btl_vader_single_copy_mechanism none "$bin" "$here/configs/default.yaml" \
      --set parallel.pipeline="$pp" --set training.micro_batch_size=1 \
      --set training.global_batch_size="$m" --set training.train_steps=6 \
      --set training.eval_interval=0 --set logging.interval=1 --set logging.expert_report_interval=0 \
      --set checkpoint.save_interval=0 --set logging.dir="$out/run-$pp-$m" "$@" >"$log" 2>&1
    ms=$(grep 'iteration ' "$log" | tail -1 | sed -E 's/.*per iteration \(ms\): ([0-9.]+).*/\1/')
    if [ "$pp" -gt 1 ]; then
      line=$(grep 'pipeline bubble' "$log" | tail -1)
      bubble=$(echo "$line" | sed -E 's/.*per stage\): (.*) \| theory.*/\1/')
      theory=$(echo "$line" | sed -E 's/.*theory ([0-9.]+).*/\1/')
      peaks=$(echo "$line" | sed -E 's/.*\(MiB\): (.*)/\1/')
    else
      bubble="-"
      theory="0"
      peaks=$(grep 'peak' "$log" | tail -1 | sed -E 's/.*peak ([0-9.]+ [KMG]iB).*/S0 \1/')
    fi
    printf '%-4s %-4s %-10s %-34s %-8s %s\n' "$pp" "$m" "$ms" "$bubble" "$theory" "$peaks"
  done
done
