// defines: expert_capacity(), drop_over_capacity()
// Capacity-based routing (Switch / GShard, Megatron's apply_router_token_dropping): each expert
// takes at most C (token, slot) assignments per rank and micro-batch; the rest are dropped, their
// slot contributes nothing and the token keeps its residual. Pure host functions on small arrays.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace origami {

// C = ceil(tokens * k / E * factor).
int64_t expert_capacity(int64_t tokens, int64_t k, int64_t num_experts, double factor);

// experts [N,k] (in/out): slots over capacity are set to -1. weights [N,k]: the slot's gate
// weight. policy "probs" keeps each expert's C highest-weight slots (ties: earlier token first),
// "position" keeps the first C in token order. Returns the number of dropped slots.
int64_t drop_over_capacity(std::vector<int32_t>& experts, const std::vector<float>& weights,
                           int64_t N, int64_t k, int64_t num_experts, int64_t capacity,
                           const std::string& policy);

}  // namespace origami
