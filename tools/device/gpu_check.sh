#!/usr/bin/env bash
# Runs the GPU checks on a lent device machine from a pack built here (tools/device/make_pack.sh):
# the device image has CUDA, PyTorch and transformers but none of our Debian libraries, so the
# pack carries the binaries, their shared libraries and an OpenMPI tree.
#   tools/device/gpu_check.sh tests       # gpu unit tests + the training tests (1 and 2 ranks)
#   tools/device/gpu_check.sh bench ARGS  # origami-bench-train and the PyTorch peer, same ARGS
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
dp=/tmp/origami-pack
if [ ! -d $dp ]; then
  mkdir -p $dp && tar xJf .devpack/pack.tar.xz -C $dp
  cp -a $dp/root/. /   # OpenMPI's own tree at the paths compiled into it (/usr/lib/.../openmpi)
fi
# Binaries rebuilt since the pack was made travel loose in .devpack/ and replace the packed ones.
for f in .devpack/origami-*; do [ -f "$f" ] && cp "$f" $dp/bin/; done
# The test binaries carry this checkout's absolute paths (shipped data, build dir).
mkdir -p /work && [ -e /work/main ] || ln -sfn "$root" /work/main
mkdir -p /work/main/build
cuda_lib=$(dirname "$(find / -xdev -name 'libcublasLt.so.13*' 2>/dev/null | head -1)")
nccl_lib=$(dirname "$(find / -xdev -name 'libnccl.so.2*' 2>/dev/null | head -1)")
run() { LD_LIBRARY_PATH=$dp/lib:$cuda_lib:$nccl_lib "$@"; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm_rsh_agent=sh
mpirun_() { run /usr/bin/orterun --oversubscribe --bind-to none --mca btl self,vader \
  --mca btl_vader_single_copy_mechanism none -x LD_LIBRARY_PATH "$@"; }

what=${1:-tests}
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
case $what in
  tests)
    # --gtest_brief: only failures (with their messages) and the summary.
    run $dp/bin/origami-backend-gpu-tests --gtest_brief=1 2>&1
    mpirun_ -np 1 $dp/bin/origami-train-mpi-tests --gtest_brief=1 --gtest_filter='CudaTraining.*' 2>&1 \
      | grep -v -E 'pmix|dlopen|Perhaps'
    for np in 2 4; do
      mpirun_ -np $np $dp/bin/origami-train-mpi-tests --gtest_brief=1 \
        --gtest_filter='CudaTraining.RanksSharingOneGpuMatchOneRank:CudaTraining.TensorAndContext*' \
        2>&1 | grep -v -E 'pmix|dlopen|Perhaps'
    done
    ;;
  bench)
    run $dp/bin/origami-bench-train --backend cuda "$@" 2>&1 | tail -${TAIL:-5}
    python3 tools/bench/torch_mixtral_bench.py "$@" 2>&1 | tail -5
    ;;
  profile)
    run $dp/bin/origami-bench-train --backend cuda --profile "$@" 2>&1 | tail -40
    ;;
  *) echo "unknown step $what (tests | bench | profile)"; exit 2 ;;
esac
