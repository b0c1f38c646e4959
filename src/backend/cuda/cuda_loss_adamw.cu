// defines: CudaBackend cross-entropy forward/backward and the AdamW update
// AdamW is one thread per element running kernel_math::adamw_update, the CPU reference's body.
// Cross-entropy: one block per row, max and fp64 sum of exponentials reduced over the block;
// lse kept for backward, as in the CPU reference. Targets are the caller's to check (no flag
// read back, no stream sync): an invalid one is treated as ignored, so nothing reads outside z.
#include <cmath>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_launch.h"
#include "backend/kernel_math.h"

namespace origami::cuda {

namespace {
constexpr int kThreads = 256;

__global__ void ce_forward_kernel(const float* logits, const int32_t* targets, float* losses,
                                  float* lse, int64_t V) {
  const int64_t r = blockIdx.x;
  const float* z = logits + r * V;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, z[j]);
  mx = block_max(mx);
  double denom = 0.0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) denom += exp(double(z[j] - mx));
  denom = block_sum(denom);
  if (threadIdx.x == 0) {
    const double l = double(mx) + log(denom);
    const int32_t tgt = targets[r];
    lse[r] = float(l);
    losses[r] = (tgt < 0 || !kernel_math::valid_target(tgt, V)) ? 0.f : float(l - double(z[tgt]));
  }
}

__global__ void ce_backward_kernel(const float* logits, const int32_t* targets, const float* lse,
                                   float scale, float* dlogits, int64_t V) {
  const int64_t r = blockIdx.x;
  const int32_t tgt = targets[r];
  float* d = dlogits + r * V;
  const float* z = logits + r * V;
  const float l = lse[r];
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    // ignored row (and an invalid target); kTargetInOtherShard keeps the softmax, no one-hot
    if (tgt == -1 || !kernel_math::valid_target(tgt, V)) {
      d[j] = 0.f;
      continue;
    }
    d[j] = scale * expf(z[j] - l) - (j == tgt ? scale : 0.f);
  }
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n,
                             kernel_math::AdamwStep step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float p = param[i], mi = m[i], vi = v[i];
    kernel_math::adamw_update(p, mi, vi, grad[i], step);
    param[i] = p, m[i] = mi, v[i] = vi;
  }
}
}  // namespace

void CudaBackend::cross_entropy_forward(const float* logits, const int32_t* targets,
                                        float* losses, float* lse, int64_t N, int64_t V) {
  if (N <= 0) return;
  ce_forward_kernel<<<unsigned(N), kThreads, 0, stream_>>>(logits, targets, losses, lse, V);
  check_launch("cross_entropy_forward", {N, V});
}

void CudaBackend::cross_entropy_backward(const float* logits, const int32_t* targets,
                                         const float* lse, float scale, float* dlogits, int64_t N,
                                         int64_t V) {
  if (N <= 0) return;
  ce_backward_kernel<<<unsigned(N), kThreads, 0, stream_>>>(logits, targets, lse, scale, dlogits, V);
  check_launch("cross_entropy_backward", {N, V});
}

void CudaBackend::adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                        float beta1, float beta2, float eps, float weight_decay, int64_t t) {
  require(t >= 1, "adamw: step t must be >= 1 for bias correction (got {})", t);
  if (n <= 0) return;
  invalidate_weights(param, size_t(n) * sizeof(float));  // bf16 copies of these are now stale
  adamw_kernel<<<blocks_for(n, kThreads, 4096), kThreads, 0, stream_>>>(
      param, grad, m, v, n, kernel_math::adamw_step(lr, beta1, beta2, eps, weight_decay, t));
  check_launch("adamw", {n});
}

}  // namespace origami::cuda
