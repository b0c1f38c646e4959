#!/usr/bin/env bash
# Float sums (reduce-scatter, all-reduce) through MpiCommunicator against Open MPI's own, at 8
# ranks (RANKS=...) on this host. Extra arguments go to origami-bench-collectives (--mib, --reps).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin=$here/${ORIGAMI_BUILD_DIR:-build}/tools/origami-bench-collectives
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=sh
echo "# $(date -u +%F) $(nproc --all) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for n in ${RANKS:-8}; do
  mpirun -np "$n" --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 --mca btl self,vader \
    --mca btl_vader_single_copy_mechanism none "$bin" "$@"
done
