// defines: CudaBackend fill/add/axpy/scale, the ordered reductions sum/sum_squares, and the
// GEMM helpers to_bf16 and scale_matrix (C = beta*C for a GEMM with an empty inner dimension)
// Elementwise kernels are grid-stride loops. The reductions run in two passes with a fixed grid
// (per-block fp64 partials, then one block adding them in block order), so a sum is the same
// bitwise on every run, as the CPU backend's is.
#include <cuda_bf16.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_launch.h"

namespace origami::cuda {

namespace {
constexpr int kThreads = 256;
constexpr int kReduceBlocks = 512;

__global__ void fill_kernel(float* x, float v, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = v;
}
__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}
__global__ void axpy_kernel(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += alpha * x[i];
}
__global__ void scale_kernel(float* x, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= alpha;
}
__global__ void scale_matrix_kernel(float* c, int64_t rows, int64_t cols, int64_t ldc, float beta) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float& v = c[(i / cols) * ldc + i % cols];
    v = beta == 0.f ? 0.f : beta * v;
  }
}

__global__ void partial_sum_kernel(const float* x, int64_t n, bool squares, double* partial) {
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double v = x[i];
    s += squares ? v * v : v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void final_sum_kernel(const double* partial, int count, double* out) {
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

__global__ void to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16(src[i]);
}
}  // namespace

void to_bf16(const float* src, void* dst, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  to_bf16_kernel<<<blocks_for(n, kThreads, 8192), kThreads, 0, s>>>(src, static_cast<__nv_bfloat16*>(dst), n);
  check_launch("gemm (operand to bf16)", {n});
}

void scale_matrix(float* c, int64_t rows, int64_t cols, int64_t ldc, float beta, cudaStream_t s) {
  scale_matrix_kernel<<<blocks_for(rows * cols, kThreads), kThreads, 0, s>>>(c, rows, cols, ldc, beta);
  check_launch("gemm (k = 0: C = beta*C)", {rows, cols, ldc});
}

void CudaBackend::fill(float* x, float value, int64_t n) {
  if (n <= 0) return;
  invalidate_weights(x, size_t(n) * sizeof(float));
  fill_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_>>>(x, value, n);
  check_launch("fill", {n});
}
void CudaBackend::add(const float* a, const float* b, float* out, int64_t n) {
  if (n <= 0) return;
  invalidate_weights(out, size_t(n) * sizeof(float));
  add_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_>>>(a, b, out, n);
  check_launch("add", {n});
}
void CudaBackend::axpy(float alpha, const float* x, float* y, int64_t n) {
  if (n <= 0) return;
  invalidate_weights(y, size_t(n) * sizeof(float));
  axpy_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_>>>(alpha, x, y, n);
  check_launch("axpy", {n});
}
void CudaBackend::scale(float* x, float alpha, int64_t n) {
  if (n <= 0) return;
  invalidate_weights(x, size_t(n) * sizeof(float));
  scale_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream_>>>(x, alpha, n);
  check_launch("scale", {n});
}

double CudaBackend::reduce(const float* x, int64_t n, bool squares) {
  if (n <= 0) return 0.0;
  auto* partial = static_cast<double*>(scratch(sizeof(double) * (kReduceBlocks + 1)));
  partial_sum_kernel<<<kReduceBlocks, kThreads, 0, stream_>>>(x, n, squares, partial);
  check_launch(squares ? "sum_squares" : "sum", {n});
  final_sum_kernel<<<1, kThreads, 0, stream_>>>(partial, kReduceBlocks, partial + kReduceBlocks);
  check_launch(squares ? "sum_squares (final)" : "sum (final)", {n});
  CUDA_CHECK(cudaMemcpyAsync(host_result_, partial + kReduceBlocks, sizeof(double),
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return *host_result_;
}
double CudaBackend::sum_squares(const float* x, int64_t n) { return reduce(x, n, true); }
double CudaBackend::sum(const float* x, int64_t n) { return reduce(x, n, false); }

}  // namespace origami::cuda
