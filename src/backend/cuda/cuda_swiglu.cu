// defines: CudaBackend SwiGLU forward/backward on a fused [rows, 2F] input
// Grid-stride loops, one thread per output element running kernel_math::swiglu / swiglu_grad,
// the CPU reference's body.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_launch.h"
#include "backend/kernel_math.h"

namespace origami::cuda {

namespace {
constexpr int kThreads = 256;

__global__ void swiglu_forward_kernel(const float* h, float* out, int64_t rows, int64_t F) {
  const int64_t n = rows * F;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / F, j = i % F;
    out[i] = kernel_math::swiglu(h[r * 2 * F + j], h[r * 2 * F + F + j]);
  }
}
__global__ void swiglu_backward_kernel(const float* dout, const float* h, float* dh, int64_t rows,
                                       int64_t F) {
  const int64_t n = rows * F;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / F, j = i % F;
    kernel_math::swiglu_grad(h[r * 2 * F + j], h[r * 2 * F + F + j], dout[i], dh[r * 2 * F + j],
                             dh[r * 2 * F + F + j]);
  }
}
}  // namespace

void CudaBackend::swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) {
  if (rows * F <= 0) return;
  swiglu_forward_kernel<<<blocks_for(rows * F, kThreads), kThreads, 0, stream_>>>(h, out, rows, F);
  check_launch("swiglu_forward", {rows, F});
}
void CudaBackend::swiglu_backward(const float* dout, const float* h, float* dh, int64_t rows,
                                  int64_t F) {
  if (rows * F <= 0) return;
  swiglu_backward_kernel<<<blocks_for(rows * F, kThreads), kThreads, 0, stream_>>>(dout, h, dh, rows, F);
  check_launch("swiglu_backward", {rows, F});
}

}  // namespace origami::cuda
