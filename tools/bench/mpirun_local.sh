# Sourced by the benchmark scripts: the environment and the mpirun line for RANKS ranks on this
# host (more ranks than cores allowed, shared-memory transport, as the MPI tests run).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=sh
echo "# $(date -u +%F) $(nproc --all) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
mpirun_local() {  # mpirun_local N BIN ARGS...
  local n=$1; shift
  mpirun -np "$n" --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 --mca btl self,vader \
    --mca btl_vader_single_copy_mechanism none "$@"
}
