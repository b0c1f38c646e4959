#!/usr/bin/env bash
# Runs every test (unit tests and multi-rank mpirun tests) of an existing build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ORIGAMI_BUILD_DIR:-build}
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
