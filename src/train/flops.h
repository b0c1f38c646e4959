// defines: training_flops_per_token(), active_params()
// Model FLOPs per trained token in Megatron's accounting (docs/performance.md states it):
// 2 FLOPs per multiply-add, training = forward + 2 x forward for backward, attention scores
// counted over the full sequence (as Megatron does, not halved for causality), MoE layers
// counting the router, top_k routed experts and any shared expert, plus the LM head.
#pragma once
#include <cstdint>
#include <vector>

#include "config/config.h"

namespace origami {

double training_flops_per_token(const Config& cfg);

// The FFN FLOPs (forward) actually spent per token in the MoE layers: each layer's slots on FFN
// experts per token x 6 H F, plus the shared expert and the residual MoE's dense MLP. counts:
// [moe layer][router row] (token, slot)s of `tokens` tokens. What MoE++'s zero-computation and
// AdaMoE's null experts save shows here (training_flops_per_token counts top_k FFN experts).
double ffn_flops_per_token(const Config& cfg, const std::vector<std::vector<int64_t>>& counts,
                           int64_t tokens);

}  // namespace origami
