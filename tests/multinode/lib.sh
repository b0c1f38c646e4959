# Sourced by the multinode tests, which set src, build and test_name first.
# Sets: work (emptied), cluster (tools/cluster/cluster --name NAME), job (the --set
# arguments of a short run of the default model). Skips (exit 77) where namespaces are not
# permitted; the cluster is removed on any exit (trap), also when the test fails.
set -uo pipefail
: "${src:?}" "${build:?}" "${test_name:?}"
build=$(cd "$build" && pwd)
src=$(cd "$src" && pwd)
cd "$src"  # the default config's data paths are relative to the source tree
work=$build/test-multinode/$test_name
rm -rf "$work"; mkdir -p "$work"
# Unique per test and per build dir, so two build trees on one machine never share a cluster.
cluster_name=m$(echo -n "$build" | md5sum | cut -c1-3)$(echo "$test_name" | tr -dc 'a-z0-9' | cut -c1-10)
cluster=("$src/tools/cluster/cluster" --name "$cluster_name")
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ORIGAMI_TRAIN=$build/src/origami-train  # the binary launch/train.sh runs
steps=8
# The default model (configs/default.yaml), 8 steps, every step logged, no evaluation.
job=(--set "training.train_steps=$steps" --set training.eval_interval=0 --set logging.interval=1
     --set logging.expert_load_interval=0)

fail() { echo "FAIL [$test_name]: $*"; exit 1; }
cleanup() { "${cluster[@]}" down > /dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

skip_unless_cluster() {
  local why
  why=$("${cluster[@]}" check) || { echo "SKIP: $why"; exit 77; }
}

# up N: a fresh cluster of N nodes x 2 slots.
up() { "${cluster[@]}" up "$1" > /dev/null || fail "cluster up $1 failed"; hostfile=$("${cluster[@]}" hostfile); }

# train_on NRANKS LOG ARGS...: launch/train.sh on node 0 across the hostfile, as a user types it.
train_on() {
  local n=$1 log=$2; shift 2
  "${cluster[@]}" run timeout -k 5 170 "$src/launch/train.sh" "$src/configs/default.yaml" -n "$n" \
    --hostfile "$hostfile" -- "$@" > "$log" 2>&1
}

# same_losses A.jsonl B.jsonl REL [FIRST_ITER]: every iteration's lm_loss from FIRST_ITER on.
same_losses() { python3 "$src/tests/multinode/compare_losses.py" "$@" || fail "losses differ"; }

# wait_for FILE SECONDS [PID]: bounded wait for a non-empty file (gives up if PID exits).
wait_for() {
  local t
  for ((t = 0; t < $2 * 10; t++)); do
    [ -s "$1" ] && return 0
    [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# One-rank reference of the same job (run here, no cluster needed): $work/ref/metrics.jsonl
reference() {
  "$build/src/origami-train" "$src/configs/default.yaml" "${job[@]}" "$@" \
    --set "logging.dir=$work/ref" > "$work/ref.log" 2>&1 || { cat "$work/ref.log"; fail "1-rank reference run failed"; }
}
