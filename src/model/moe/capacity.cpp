// Capacity arithmetic and the drop rule of capacity-based routing: pure host functions on
// the router's (small) choice arrays.
#include "model/moe/capacity.h"

#include <algorithm>
#include <cmath>

namespace origami {

int64_t expert_capacity(int64_t tokens, int64_t k, int64_t num_experts, double factor) {
  return int64_t(std::ceil(double(tokens * k) / double(num_experts) * factor));
}

int64_t drop_over_capacity(std::vector<int32_t>& experts, const std::vector<float>& weights,
                           int64_t N, int64_t k, int64_t num_experts, int64_t capacity,
                           const std::string& policy) {
  // Slots of each expert, in token order.
  std::vector<std::vector<int64_t>> slots(static_cast<size_t>(num_experts));
  for (int64_t i = 0; i < N * k; ++i)
    if (experts[size_t(i)] >= 0) slots[size_t(experts[size_t(i)])].push_back(i);
  int64_t dropped = 0;
  for (auto& s : slots) {
    if (int64_t(s.size()) <= capacity) continue;
    if (policy == "probs")
      std::stable_sort(s.begin(), s.end(), [&](int64_t a, int64_t b) {
        return weights[size_t(a)] > weights[size_t(b)];
      });
    for (size_t j = size_t(capacity); j < s.size(); ++j) experts[size_t(s[j])] = -1;
    dropped += int64_t(s.size()) - capacity;
  }
  return dropped;
}

}  // namespace origami
