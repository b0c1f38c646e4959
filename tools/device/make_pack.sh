#!/usr/bin/env bash
# Packs what tools/device/gpu_check.sh needs on a lent GPU machine into .devpack/ (ignored by
# git; pass it to the device tool with carry: [".devpack"]). That machine has CUDA, PyTorch and
# transformers but none of our Debian libraries, so the pack holds:
#   bin/   the GPU test binaries, origami-train and origami-bench-train (built here, x86-64)
#   lib/   every shared library they and OpenMPI's plugins load, except glibc, libstdc++ and CUDA
#   root/  OpenMPI's tree at the paths compiled into it (/usr/lib/x86_64-linux-gnu/openmpi, ...)
# Later rebuilds of single binaries can travel loose as .devpack/origami-* (gpu_check.sh prefers
# them). Run after tools/build.sh; echo /.devpack/ >> .git/info/exclude once.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${ORIGAMI_BUILD_DIR:-build}
bins="$build/tests/origami-backend-gpu-tests $build/tests/origami-train-mpi-tests $build/src/origami-train $build/tools/origami-bench-train"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,lib} "$stage"/root/usr/{bin,share,lib/x86_64-linux-gnu} "$stage"/root/etc
cp $bins "$stage"/bin/
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libstdc\+\+|libgcc_s|libdl|libpthread|librt|libresolv|libcuda|libcudart|libcublas|libnccl)'
{
  for b in $bins; do ldd "$b"; done
  for p in /usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3/*.so; do ldd "$p" 2>/dev/null || true; done
} | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] || cp -L "$path" "$stage/lib/$name"
done
cp -a /usr/lib/x86_64-linux-gnu/openmpi "$stage"/root/usr/lib/x86_64-linux-gnu/
cp -a /usr/share/openmpi "$stage"/root/usr/share/
cp -a /etc/openmpi "$stage"/root/etc/
cp /usr/bin/orterun /usr/bin/orted "$stage"/root/usr/bin/
ln -sf orterun "$stage"/root/usr/bin/mpirun
mkdir -p .devpack
rm -f .devpack/origami-*
tar cJf .devpack/pack.tar.xz -C "$stage" .
du -h .devpack/pack.tar.xz
