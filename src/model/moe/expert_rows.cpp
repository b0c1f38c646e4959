#include "model/moe/expert_rows.h"

#include <algorithm>
#include <cmath>

#include "model/moe/capacity.h"

namespace origami {

ExpertRows expert_rows(const MoeConfig& moe, int64_t n, int64_t num_experts, int ep, int etp,
                       double imbalance) {
  const int64_t k = moe.top_k;
  ExpertRows r;
  if (moe.capacity_factor && moe.pad_to_capacity) {
    // Every (rank, expert) block is C rows: E C sent, E / EP experts x EP sources x C received.
    const int64_t C = expert_capacity(n, k, num_experts, *moe.capacity_factor);
    r.local = r.received = num_experts * C;
  } else {
    double load = std::max(imbalance, moe.dropless_reserve);
    if (moe.capacity_factor) load = std::min(load, *moe.capacity_factor);
    r.local = n * k;
    r.received = int64_t(std::ceil(double(n * k) * load));
    if (!moe.fssdp.enabled)
      r.received = std::min(r.received, n * ep * std::min(k, num_experts / std::max(ep, 1)));
  }
  r.computed = r.received * etp;
  return r;
}

}  // namespace origami
