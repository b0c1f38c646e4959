#!/usr/bin/env bash
# Configures and builds Origami into build/ (or $ORIGAMI_BUILD_DIR). Extra arguments go to CMake,
# e.g. tools/build.sh -DORIGAMI_CUDA=OFF or -DCMAKE_CUDA_ARCHITECTURES=90a.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ORIGAMI_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$(nproc)"
