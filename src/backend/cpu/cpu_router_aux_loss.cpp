// defines: CpuBackend per-block expert counts, the load-balancing loss and the router z-loss
// The reference for the router's auxiliary losses: fp64 sums in row order, then over (block,
// expert), exactly the order the model's host arithmetic used before these ops existed. Element math in backend/kernel_math.h, shared with CUDA.
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/kernel_math.h"
#include "base/error.h"

namespace origami {

namespace {
namespace km = kernel_math;

// The block rule's preconditions; returns rows per block for the implicit (null) layout.
int64_t rows_per_block(const int32_t* row_block, int64_t N, int64_t B, const char* op) {
  check(B >= 1 && N >= 0, "{}: {} rows in {} blocks; allowed: B >= 1", op, N, B);
  if (!row_block) {
    check(N % B == 0, "{}: {} rows do not split into {} equal blocks (give row_block)", op, N, B);
    return std::max<int64_t>(N / B, 1);
  }
  for (int64_t t = 0; t < N; ++t)
    check(row_block[t] >= 0 && row_block[t] < B, "{}: row_block[{}] = {} outside [0, {})", op, t,
          row_block[t], B);
  return 1;
}
}  // namespace

void CpuBackend::expert_counts_per_block(const int32_t* idx, const int32_t* row_block, int64_t N,
                                         int64_t k, int64_t E, int64_t B, int64_t* counts) {
  check(E >= 1 && k >= 0, "expert_counts_per_block: E = {}, k = {}; allowed: E >= 1, k >= 0", E,
        k);
  const int64_t per = rows_per_block(row_block, N, B, "expert_counts_per_block");
  std::fill(counts, counts + B * E, int64_t(0));
  for (int64_t t = 0; t < N; ++t) {
    const int64_t b = km::block_of_row(row_block, t, per);
    for (int64_t s = 0; s < k; ++s) {
      const int32_t e = idx[t * k + s];
      check(e >= -1 && e < E, "expert_counts_per_block: slot ({}, {}) holds expert {}; allowed: "
            "-1 (unused) or 0..{}", t, s, e, E - 1);
      if (e >= 0) ++counts[b * E + e];
    }
  }
}

void CpuBackend::balance_loss(const float* probs, const int64_t* counts, const int32_t* row_block,
                              int64_t N, int64_t E, int64_t B, bool routed_share, double slots,
                              double scale, double n, float grad_scale, double* loss,
                              float* dprobs) {
  check(E >= 1, "balance_loss: E = {}; allowed: E >= 1", E);
  check(routed_share || slots > 0, "balance_loss: slots = {}; allowed: > 0 (or routed_share)",
        slots);
  check(n > 0, "balance_loss: n = {}; allowed: > 0", n);
  const int64_t per = rows_per_block(row_block, N, B, "balance_loss");
  std::vector<double> f(size_t(B * E));
  for (int64_t b = 0; b < B; ++b) {
    int64_t routed = 0;
    for (int64_t i = 0; i < E; ++i) routed += counts[b * E + i];
    const double d = km::balance_denominator(routed, routed_share, slots);
    for (int64_t i = 0; i < E; ++i) f[size_t(b * E + i)] = km::balance_fraction(counts[b * E + i], d);
  }
  // P[b,i] in row order (the rows of one block need not be contiguous).
  std::vector<double> column(size_t(B * E), 0.0);
  for (int64_t t = 0; t < N; ++t) {
    const int64_t b = km::block_of_row(row_block, t, per);
    const double* fb = f.data() + b * E;
    for (int64_t i = 0; i < E; ++i) {
      column[size_t(b * E + i)] += probs[t * E + i];
      dprobs[t * E + i] = km::balance_grad(grad_scale, scale, fb[i], n);
    }
  }
  double total = 0.0;
  for (int64_t j = 0; j < B * E; ++j) total += km::balance_term(f[size_t(j)], column[size_t(j)], n);
  *loss += scale * total;
}

void CpuBackend::router_z_loss(const float* lse, int64_t N, float grad_scale, double* loss,
                               float* dlse) {
  if (N <= 0) return;
  double total = 0.0;
  for (int64_t t = 0; t < N; ++t) {
    total += double(lse[t]) * lse[t];
    dlse[t] = km::z_loss_grad(lse[t], grad_scale, N);
  }
  *loss += total / double(N);
}

}  // namespace origami
