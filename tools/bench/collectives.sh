#!/usr/bin/env bash
# Float sums (reduce-scatter, all-reduce) through MpiCommunicator against Open MPI's own, at 8
# ranks (RANKS=...) on this host. Extra arguments go to origami-bench-collectives (--mib, --reps).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
source "$here/tools/bench/mpirun_local.sh"
for n in ${RANKS:-8}; do
  mpirun_local "$n" "$here/${ORIGAMI_BUILD_DIR:-build}/tools/origami-bench-collectives" "$@"
done
