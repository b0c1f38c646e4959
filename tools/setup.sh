#!/usr/bin/env bash
# Installs the Debian 12 packages Origami builds and runs with. Idempotent: installs only what is
# missing (run as root, or with sudo available). Used by README's commands and by .ci/run.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin                 # MPI launch and collectives
  libyaml-cpp-dev libspdlog-dev libfmt-dev   # config, logging, formatting
  libhdf5-dev                                # checkpoints
  libopenblas-dev                            # CPU backend GEMM
  googletest libgtest-dev                    # tests
  libsentencepiece-dev sentencepiece         # tokenizer (library + spm_* tools for tests)
  nlohmann-json3-dev libcli11-dev            # metrics JSONL, command lines
  python3 python3-numpy python3-torch        # reference scripts in tests/ (Mixtral golden)
  python3-matplotlib                         # plots from tools/ (plot_router_schedules.py)
  iproute2 nftables                          # tools/cluster: namespaces, tbf shaping, link cuts
  clang libclang-rt-dev libomp-dev           # fuzz targets (tools/fuzz.sh): libFuzzer, OpenMP
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages present"
fi
