// defines: cuda::check_launch(), cuda::blocks_for(), warp/block reductions for the kernels
// Shared by the backend's .cu files. check_launch runs after every kernel launch so that a bad
// launch configuration is reported by the op that made it (with its shape), not by whichever
// later CUDA call happens to notice.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include <cstring>
#include <sstream>
#include <string>

namespace origami::cuda {

// Throws Error "CUDA kernel <op> [shape...] failed to launch: <reason>" on a launch error.
void check_launch(const char* op, std::initializer_list<int64_t> shape);

// Throws origami::Error with this message (base/error.h's fail, from a .cpp file).
[[noreturn]] void fail_message(const std::string& message);

// check() for .cu files, which cannot include fmt (nvcc's front end and fmt 9's constexpr
// detection disagree): the same "{}" placeholders, substituted in order with operator<<.
template <typename... Args>
void require(bool ok, const char* format, const Args&... args) {
  if (ok) return;
  std::ostringstream out;
  const char* p = format;
  auto put = [&](const auto& a) {
    const char* q = std::strstr(p, "{}");
    if (!q) return;
    out.write(p, q - p);
    out << a;
    p = q + 2;
  };
  (put(args), ...);
  out << p;
  fail_message(out.str());
}

// Kernels other files launch (cuda_elementwise.cu), queued on stream s:
void to_bf16(const float* src, void* dst, int64_t n, cudaStream_t s);  // round n floats to bf16
// C = beta * C over a [rows, cols] matrix with leading dimension ldc (a GEMM with k = 0).
void scale_matrix(float* c, int64_t rows, int64_t cols, int64_t ldc, float beta, cudaStream_t s);

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 1 << 20) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return unsigned(b < max_blocks ? b : max_blocks);
}

#ifdef __CUDACC__
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// The order of additions is fixed by the thread layout, so results are run-to-run identical.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  T t = lane < warps ? part[lane] : T(0);
  return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = lane < warps ? part[lane] : -INFINITY;
  return warp_max(t);
}
#endif

}  // namespace origami::cuda
