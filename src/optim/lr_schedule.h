// defines: learning_rate()
// Megatron's schedule: linear warmup from 0 to lr over warmup_steps, then cosine (or linear)
// decay to min_lr at decay_steps, min_lr after; "constant" stays at lr after warmup.
#pragma once
#include <cstdint>

#include "config/config.h"

namespace origami {

// step counts completed optimizer steps (the first update uses step 0 -> lr * 1/warmup).
double learning_rate(const OptimizerConfig& o, int64_t step, int64_t train_steps);

}  // namespace origami
