#!/usr/bin/env bash
# Launches origami-train under mpirun, on one host or across the hosts of a hostfile.
#   launch/train.sh CONFIG [-n RANKS] [--hostfile FILE] [--max-restarts N] [-- origami-train args]
# CONFIG may be "default" for the embedded default job. Prints the mpirun line it runs. Each rank
# picks its device from its node-local rank, so give one slot per GPU (hostfile `slots=`).
# --max-restarts N: a failed job is relaunched from the checkpoint dir's `latest` (up to N times).
# Remote launch uses ssh, or the agent in OMPI_MCA_plm_rsh_agent (docs/multinode.md).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
say() { echo "launch/train.sh: $*" >&2; }
[ $# -ge 1 ] || usage
config=$1; shift
ranks=2; hostfile=""; max_restarts=0; extra=()
while [ $# -gt 0 ]; do
  case $1 in
    -n|--ranks) ranks=${2:-}; shift 2 || usage ;;
    --hostfile) hostfile=${2:-}; shift 2 || usage ;;
    --max-restarts) max_restarts=${2:-}; shift 2 || usage ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage ;;
    *) say "unknown argument '$1'"; usage ;;
  esac
done
[[ $ranks =~ ^[1-9][0-9]*$ ]] || { say "-n: need a positive number of ranks, got '$ranks'"; exit 2; }
[[ $max_restarts =~ ^[0-9]+$ ]] || { say "--max-restarts: need a number >= 0, got '$max_restarts'"; exit 2; }
bin=${ORIGAMI_TRAIN:-$here/${ORIGAMI_BUILD_DIR:-build}/src/origami-train}
[ -x "$bin" ] || { say "$bin not found; build first (tools/build.sh)"; exit 1; }
args=()
[ "$config" = default ] || args+=("$config")

# OpenMPI as root needs both variables.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmd=(mpirun -np "$ranks" --bind-to none -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}")
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || { say "--hostfile: cannot read '$hostfile'"; exit 2; }
  slots=$(awk '!/^[ \t]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) n = substr($i, 7); s += n }
               END { print s + 0 }' "$hostfile")
  [ "$slots" -ge "$ranks" ] ||
    { say "--hostfile $hostfile has $slots slots for $ranks ranks (one slot per GPU; add hosts or slots=)"; exit 2; }
  # The remote-launch agent comes from the environment (a site's ssh, or a cluster's own agent).
  if [ -z "${OMPI_MCA_plm_rsh_agent:-}" ] && ! command -v ssh >/dev/null 2>&1; then
    say "--hostfile needs ssh on PATH or a launch agent in OMPI_MCA_plm_rsh_agent"; exit 2
  fi
  # Ranks fill each host's slots in order (node-local rank = GPU), so consecutive ranks (TP,
  # then CP/DP or ETP/EP) share a node. TCP between hosts, shared memory within one.
  # OOB keepalive (defaults 300 s + 9 x 20 s) is what notices a host that silently vanished:
  # 5 s + 3 x 2 s ends such a job in ~11 s instead of hanging (docs/multinode.md). A site can
  # override any of these through the environment.
  export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader,tcp}
  export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-5}
  export OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-2}
  export OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-3}
  cmd+=(--hostfile "$hostfile" --map-by slot)
else
  # One host: allow more ranks than cores, shared-memory transport only; no ssh needed.
  [ -n "${OMPI_MCA_plm_rsh_agent:-}" ] || command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=sh
  cmd+=(--oversubscribe --mca mpi_yield_when_idle 1 --mca btl self,vader
        --mca btl_vader_single_copy_mechanism none)
fi

# The effective config's run and checkpoint dirs (for the failure summary and restarts); a bad
# config or --set is reported here, before anything is launched.
if ! effective=$("$bin" "${args[@]}" "${extra[@]}" --print-config --ranks "$ranks" 2>&1); then
  echo "$effective" >&2; exit 1
fi
yaml_value() {  # yaml_value SECTION KEY: a top-level section's scalar from --print-config
  awk -v s="$1:" -v k="  $2:" '$0 == s { on = 1; next } /^[^ ]/ { on = 0 }
       on && index($0, k) == 1 { v = substr($0, length(k) + 2); gsub(/^"|"$/, "", v); print v; exit }' <<< "$effective"
}
run_dir=$(yaml_value logging dir)
ckpt_dir=$(yaml_value checkpoint dir)
[ -n "$ckpt_dir" ] || ckpt_dir=$run_dir/checkpoints

summary() {  # what was happening when the job ended: last logged iteration, last checkpoint
  local rc=$1 last="none logged" latest="none"
  [ -s "$run_dir/metrics.jsonl" ] &&
    last=$(grep -o '"iteration":[0-9]*' "$run_dir/metrics.jsonl" | tail -1 | cut -d: -f2)
  [ -f "$ckpt_dir/latest" ] && latest="$ckpt_dir/$(cat "$ckpt_dir/latest")"
  say "job failed with exit status $rc; last logged iteration: $last; last checkpoint: $latest"
}

child=""
forward() { [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 143; }
trap forward INT TERM
resume=()
for ((attempt = 0; ; attempt++)); do
  line=("${cmd[@]}" "$bin" "${args[@]}" "${extra[@]}" "${resume[@]}")
  echo "+ ${line[*]}"
  "${line[@]}" <&0 & child=$!
  rc=0; wait "$child" || rc=$?
  child=""
  [ "$rc" -ne 0 ] || exit 0
  summary "$rc"
  if [ "$attempt" -ge "$max_restarts" ]; then
    [ "$max_restarts" -eq 0 ] || say "giving up after $max_restarts restarts"
    exit "$rc"
  fi
  if [ -f "$ckpt_dir/latest" ]; then
    resume=(--set "checkpoint.load=$ckpt_dir")
    say "restart $((attempt + 1)) of $max_restarts: resuming from $ckpt_dir/$(cat "$ckpt_dir/latest")"
  else
    say "restart $((attempt + 1)) of $max_restarts: no checkpoint in $ckpt_dir yet, starting over"
  fi
  sleep 1  # let the runtime's sockets and the failed daemons go before the relaunch
done
