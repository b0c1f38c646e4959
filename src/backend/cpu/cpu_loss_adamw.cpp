// defines: CpuBackend cross-entropy forward/backward and the AdamW update
// Cross-entropy keeps lse per row so backward needs no second reduction over the vocabulary;
// rows whose target is -1 are padding (zero loss, zero gradient); -2 marks a target held by
// another vocabulary shard (softmax gradient, no one-hot here). The target rule and AdamW's
// per-element update are kernel_math.h's, shared with the CUDA backend.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/kernel_math.h"
#include "base/error.h"

namespace origami {

namespace {
void check_targets(const int32_t* targets, int64_t N, int64_t V, const char* op) {
  for (int64_t i = 0; i < N; ++i) {
    check(kernel_math::valid_target(targets[i], V),
          "{}: target {} of row {} out of range [0, {}) (-1 = ignored, {} = in another "
          "vocabulary shard)", op, targets[i], i, V, Backend::kTargetInOtherShard);
  }
}
}  // namespace

void CpuBackend::cross_entropy_forward(const float* logits, const int32_t* targets,
                                       float* losses, float* lse, int64_t N, int64_t V) {
  check_targets(targets, N, V, "cross_entropy_forward");
#pragma omp parallel for schedule(static) if (N * V > 65536)
  for (int64_t i = 0; i < N; ++i) {
    const float* z = logits + i * V;
    const float mx = *std::max_element(z, z + V);
    double denom = 0.0;
    for (int64_t j = 0; j < V; ++j) denom += std::exp(double(z[j] - mx));
    const double l = double(mx) + std::log(denom);
    lse[i] = float(l);
    losses[i] = targets[i] < 0 ? 0.f : float(l - double(z[targets[i]]));
  }
}

void CpuBackend::cross_entropy_backward(const float* logits, const int32_t* targets,
                                        const float* lse, float scale, float* dlogits, int64_t N,
                                        int64_t V) {
  check_targets(targets, N, V, "cross_entropy_backward");
#pragma omp parallel for schedule(static) if (N * V > 65536)
  for (int64_t i = 0; i < N; ++i) {
    float* d = dlogits + i * V;
    if (targets[i] == -1) {
      std::fill(d, d + V, 0.f);
      continue;
    }
    const float* z = logits + i * V;
    const float l = lse[i];
    for (int64_t j = 0; j < V; ++j) d[j] = scale * std::exp(z[j] - l);
    if (targets[i] >= 0) d[targets[i]] -= scale;
  }
}

void CpuBackend::adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int64_t t) {
  check(t >= 1, "adamw: step t must be >= 1 for bias correction (got {})", t);
  const auto step = kernel_math::adamw_step(lr, beta1, beta2, eps, weight_decay, t);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) kernel_math::adamw_update(param[i], m[i], v[i], grad[i], step);
}

}  // namespace origami
