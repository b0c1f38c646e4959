// defines: CpuBackend router forward/backward and the MoE token permutation ops
// Router math is per token (rows independent, parallel over tokens), each row's body the
// kernel_math.h function a CUDA thread runs too. Permutation indices come
// from one sequential counting sort (stable in token, then slot order), so the expert-sorted
// buffer layout is the same on every backend; the data movement is parallel over tokens.
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/kernel_math.h"
#include "base/error.h"

namespace origami {

void CpuBackend::router_forward(const float* logits, float* probs, int32_t* idx, float* weights,
                                float* lse, int64_t N, int64_t E, int64_t k, bool renormalize) {
  check(E > 0 && k >= 1 && k <= E, "router_forward: need 1 <= k <= E (k={}, E={})", k, E);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    lse[t] = kernel_math::router_forward_row(logits + t * E, E, k, renormalize, probs + t * E,
                                             idx + t * k, weights + t * k);
  }
}

void CpuBackend::router_backward(const float* dweights, const float* dprobs, const float* dlse,
                                 const float* probs, const int32_t* idx, const float* weights,
                                 float* dlogits, int64_t N, int64_t E, int64_t k,
                                 bool renormalize) {
  check(E > 0 && k >= 1 && k <= E, "router_backward: need 1 <= k <= E (k={}, E={})", k, E);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    kernel_math::router_backward_row(probs + t * E, idx + t * k, weights + t * k, dweights + t * k,
                                     dprobs ? dprobs + t * E : nullptr,
                                     dlse ? double(dlse[t]) : 0.0, E, k, renormalize,
                                     dlogits + t * E);
  }
}

void CpuBackend::moe_permute_indices(const int32_t* idx, int64_t N, int64_t k, int64_t E,
                                     int64_t* counts, int32_t* row) {
  std::fill(counts, counts + E, int64_t(0));
  for (int64_t i = 0; i < N * k; ++i) {
    const int32_t e = idx[i];
    check(e < E, "moe_permute_indices: expert index {} at token {} slot {} out of range [0, {})",
          e, i / k, i % k, E);
    if (e >= 0) ++counts[e];
  }
  std::vector<int64_t> next(E, 0);
  for (int64_t e = 1; e < E; ++e) next[e] = next[e - 1] + counts[e - 1];
  for (int64_t i = 0; i < N * k; ++i) row[i] = idx[i] < 0 ? -1 : int32_t(next[idx[i]]++);
}

void CpuBackend::moe_permute(const float* x, const int32_t* row, float* out, int64_t N, int64_t k,
                             int64_t dim) {
#pragma omp parallel for schedule(static) if (N * k * dim > 65536)
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t s = 0; s < k; ++s) {
      const int32_t r = row[t * k + s];
      if (r >= 0) std::memcpy(out + int64_t(r) * dim, x + t * dim, sizeof(float) * dim);
    }
  }
}

void CpuBackend::moe_permute_backward(const float* dout_perm, const int32_t* row, float* dx,
                                      int64_t N, int64_t k, int64_t dim) {
#pragma omp parallel for schedule(static) if (N * k * dim > 65536)
  for (int64_t t = 0; t < N; ++t) {
    float* d = dx + t * dim;
    std::fill(d, d + dim, 0.f);
    for (int64_t s = 0; s < k; ++s) {
      const int32_t r = row[t * k + s];
      if (r < 0) continue;
      const float* src = dout_perm + int64_t(r) * dim;
      for (int64_t j = 0; j < dim; ++j) d[j] += src[j];
    }
  }
}

void CpuBackend::moe_unpermute(const float* y, const int32_t* row, const float* weights,
                               float* out, int64_t N, int64_t k, int64_t dim) {
#pragma omp parallel for schedule(static) if (N * k * dim > 65536)
  for (int64_t t = 0; t < N; ++t) {
    float* o = out + t * dim;
    std::fill(o, o + dim, 0.f);
    for (int64_t s = 0; s < k; ++s) {
      const int32_t r = row[t * k + s];
      if (r < 0) continue;
      const float w = weights[t * k + s];
      const float* src = y + int64_t(r) * dim;
      for (int64_t j = 0; j < dim; ++j) o[j] += w * src[j];
    }
  }
}

void CpuBackend::moe_unpermute_backward(const float* dout, const float* y, const int32_t* row,
                                        const float* weights, float* dy, float* dweights,
                                        int64_t N, int64_t k, int64_t dim) {
  // Each routed (token, slot) owns its row of dy, so the writes never collide. Rows of dy that
  // no slot points at (capacity padding) are left as they are; the caller zeroes such buffers.
#pragma omp parallel for schedule(static) if (N * k * dim > 65536)
  for (int64_t t = 0; t < N; ++t) {
    const float* d = dout + t * dim;
    for (int64_t s = 0; s < k; ++s) {
      const int32_t r = row[t * k + s];
      if (r < 0) {
        dweights[t * k + s] = 0.f;
        continue;
      }
      const float w = weights[t * k + s];
      const float* yr = y + int64_t(r) * dim;
      float* dyr = dy + int64_t(r) * dim;
      double acc = 0.0;
      for (int64_t j = 0; j < dim; ++j) {
        dyr[j] = w * d[j];
        acc += double(d[j]) * yr[j];
      }
      dweights[t * k + s] = float(acc);
    }
  }
}

}  // namespace origami
