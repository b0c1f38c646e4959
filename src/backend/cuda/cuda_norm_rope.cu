// defines: CudaBackend RMSNorm and RoPE (forward and backward)
// Row ops use one block per row. RMSNorm's weight gradient, which would collide across rows, is
// not done with atomics: it runs column-parallel in two passes over row chunks with a fixed
// order, so it is bitwise reproducible, like the CPU backend's. RoPE's angle and rotation are
// kernel_math.h's, shared with the CPU reference.
#include <cmath>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_launch.h"
#include "backend/kernel_math.h"

namespace origami::cuda {

namespace {
constexpr int kRowThreads = 256;
constexpr int kRowsPerChunk = 128;  // rows per partial sum of RMSNorm's weight gradient

__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float* y, float* rstd,
                                       int64_t dim, float eps) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  double ss = 0.0;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) ss += double(xr[j]) * xr[j];
  ss = block_sum(ss);
  const float rs = float(1.0 / sqrt(ss / double(dim) + double(eps)));
  if (threadIdx.x == 0) rstd[r] = rs;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) y[r * dim + j] = xr[j] * rs * w[j];
}
// dx_j = rs * w_j * dy_j - x_j * rs^3 / dim * sum_i(dy_i * w_i * x_i)
__global__ void rmsnorm_backward_dx_kernel(const float* dy, const float* x, const float* w,
                                           const float* rstd, float* dx, int64_t dim) {
  const int64_t r = blockIdx.x;
  const float *xr = x + r * dim, *dyr = dy + r * dim;
  double dot = 0.0;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dot += double(dyr[j]) * w[j] * xr[j];
  dot = block_sum(dot);
  const double rs = rstd[r];
  const float c = float(dot * rs * rs * rs / double(dim)), rsf = float(rs);
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
    dx[r * dim + j] = rsf * w[j] * dyr[j] - xr[j] * c;
}
// partial[chunk, j] = sum over the chunk's rows of dy*x*rs, rows in order.
__global__ void rmsnorm_dw_partial_kernel(const float* dy, const float* x, const float* rstd,
                                          float* partial, int64_t rows, int64_t dim) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= dim) return;
  const int64_t lo = int64_t(blockIdx.y) * kRowsPerChunk;
  const int64_t hi = min(rows, lo + kRowsPerChunk);
  float s = 0.f;
  for (int64_t r = lo; r < hi; ++r) s += dy[r * dim + j] * x[r * dim + j] * rstd[r];
  partial[int64_t(blockIdx.y) * dim + j] = s;
}
__global__ void rmsnorm_dw_final_kernel(const float* partial, float* dw, int64_t chunks, int64_t dim) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= dim) return;
  float s = 0.f;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * dim + j];
  dw[j] += s;
}

// One thread per (row, pair); every head of the row shares the angle.
__global__ void rope_kernel(float* x, const int32_t* positions, int64_t rows, int64_t heads,
                            int64_t hd, float theta, double sign) {
  const int64_t half = hd / 2, n = rows * half;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / half, i = t % half;
    const double angle = kernel_math::rope_angle(positions[r], kernel_math::rope_inv_freq(i, hd, theta), sign);
    double s, c;
    sincos(angle, &s, &c);
    const float cs = float(c), sn = float(s);
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * hd;
      kernel_math::rope_rotate(v[i], v[i + half], cs, sn);
    }
  }
}
}  // namespace

void CudaBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd,
                                  int64_t rows, int64_t dim, float eps) {
  if (rows <= 0) return;
  rmsnorm_forward_kernel<<<unsigned(rows), kRowThreads, 0, stream_>>>(x, w, y, rstd, dim, eps);
  check_launch("rmsnorm_forward", {rows, dim});
}
void CudaBackend::rmsnorm_backward(const float* dy, const float* x, const float* w,
                                   const float* rstd, float* dx, float* dw, int64_t rows,
                                   int64_t dim) {
  if (rows <= 0) return;
  rmsnorm_backward_dx_kernel<<<unsigned(rows), kRowThreads, 0, stream_>>>(dy, x, w, rstd, dx, dim);
  check_launch("rmsnorm_backward (dx)", {rows, dim});
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  require(chunks < 65536, "rmsnorm_backward: {} rows exceed the kernel's limit of {}", rows,
        int64_t(65535) * kRowsPerChunk);
  auto* partial = static_cast<float*>(scratch(sizeof(float) * chunks * dim));
  rmsnorm_dw_partial_kernel<<<dim3(blocks_for(dim, 128), unsigned(chunks)), 128, 0, stream_>>>(
      dy, x, rstd, partial, rows, dim);
  check_launch("rmsnorm_backward (dw partial)", {rows, dim});
  rmsnorm_dw_final_kernel<<<blocks_for(dim, 128), 128, 0, stream_>>>(partial, dw, chunks, dim);
  check_launch("rmsnorm_backward (dw)", {rows, dim});
}

void CudaBackend::rope_forward(float* x, const int32_t* positions, int64_t rows, int64_t heads,
                               int64_t head_dim, float theta) {
  require(head_dim % 2 == 0, "rope: head_dim must be even (got {})", head_dim);
  if (rows <= 0) return;
  rope_kernel<<<blocks_for(rows * head_dim / 2, 256), 256, 0, stream_>>>(x, positions, rows, heads,
                                                                          head_dim, theta, 1.0);
  check_launch("rope_forward", {rows, heads, head_dim});
}
void CudaBackend::rope_backward(float* dx, const int32_t* positions, int64_t rows, int64_t heads,
                                int64_t head_dim, float theta) {
  require(head_dim % 2 == 0, "rope: head_dim must be even (got {})", head_dim);
  if (rows <= 0) return;
  rope_kernel<<<blocks_for(rows * head_dim / 2, 256), 256, 0, stream_>>>(dx, positions, rows, heads,
                                                                          head_dim, theta, -1.0);
  check_launch("rope_backward", {rows, heads, head_dim});
}

}  // namespace origami::cuda
