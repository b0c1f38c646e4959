// defines: training_flops_per_token(), active_params()
// Model FLOPs per trained token in Megatron's accounting (docs/performance.md states it):
// 2 FLOPs per multiply-add, training = forward + 2 x forward for backward, attention scores
// counted over the full sequence (as Megatron does, not halved for causality), MoE layers
// counting the router, top_k routed experts and any shared expert, plus the LM head.
#pragma once
#include <cstdint>

#include "config/config.h"

namespace origami {

double training_flops_per_token(const Config& cfg);

}  // namespace origami
