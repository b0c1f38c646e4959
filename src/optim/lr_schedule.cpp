// learning_rate(): warmup, then cosine / linear decay to min_lr, as a pure function of the
// step so resumed runs get the same rates.
#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace origami {

double learning_rate(const OptimizerConfig& o, int64_t step, int64_t train_steps) {
  const int64_t warmup = o.warmup_steps;
  if (warmup > 0 && step < warmup) return o.lr * double(step + 1) / double(warmup);
  if (o.decay == "constant") return o.lr;
  const int64_t decay_steps = o.decay_steps > 0 ? o.decay_steps : train_steps;
  if (step >= decay_steps) return o.min_lr;
  const double r = double(step - warmup) / double(std::max<int64_t>(decay_steps - warmup, 1));
  const double coeff = o.decay == "linear" ? 1.0 - r : 0.5 * (1.0 + std::cos(std::numbers::pi * r));
  return o.min_lr + (o.lr - o.min_lr) * coeff;
}

}  // namespace origami
