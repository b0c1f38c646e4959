#!/usr/bin/env bash
# Launches origami-train under mpirun.
#   launch/train.sh CONFIG [-n RANKS] [--hostfile FILE] [-- extra origami-train args, e.g. --set k=v]
# CONFIG may be "default" for the embedded default job. Prints the mpirun line it runs. Each rank
# picks its device from its node-local rank (OMPI_COMM_WORLD_LOCAL_RANK), so launch one rank per
# GPU per node (--hostfile with slots=<GPUs per node>).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
config=$1; shift
ranks=2; hostfile=""; extra=()
while [ $# -gt 0 ]; do
  case $1 in
    -n|--ranks) ranks=$2; shift 2 ;;
    --hostfile) hostfile=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "launch/train.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
bin=${ORIGAMI_TRAIN:-$here/${ORIGAMI_BUILD_DIR:-build}/src/origami-train}
[ -x "$bin" ] || { echo "launch/train.sh: $bin not found; build first (tools/build.sh)" >&2; exit 1; }
args=()
[ "$config" = default ] || args+=("$config")

# OpenMPI as root needs both variables; without ssh installed, a single-host run must not try it.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=sh
cmd=(mpirun -np "$ranks" --bind-to none -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}")
if [ -n "$hostfile" ]; then
  cmd+=(--hostfile "$hostfile" --map-by slot)
else
  # One host: allow more ranks than cores, shared-memory transport only.
  cmd+=(--oversubscribe --mca mpi_yield_when_idle 1 --mca btl self,vader
        --mca btl_vader_single_copy_mechanism none)
fi
cmd+=("$bin" "${args[@]}" "${extra[@]}")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
