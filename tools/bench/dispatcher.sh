#!/usr/bin/env bash
# Dispatcher / MoE-layer throughput on the CPU backend for 1, 2, 4 and 8 ranks (expert parallel
# over all ranks). Extra arguments go to origami-bench-dispatcher (e.g. --tokens 4096 --etp 2).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
source "$here/tools/bench/mpirun_local.sh"
for n in ${RANKS:-1 2 4 8}; do
  mpirun_local "$n" "$here/${ORIGAMI_BUILD_DIR:-build}/tools/origami-bench-dispatcher" "$@"
done
