// clip_factor() and make_optimizer(): the pieces of optimizer.h that are not an optimizer.
#include "optim/optimizer.h"

#include <cmath>

#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"

namespace origami {

double clip_factor(double norm, double clip) {
  if (clip <= 0.0 || norm <= clip || !std::isfinite(norm)) return 1.0;
  return clip / (norm + 1e-6);
}

std::unique_ptr<Optimizer> make_optimizer(Backend& be, ParamStore& store,
                                          const OptimizerConfig& cfg,
                                          const GradientGroups& groups) {
  if (cfg.distributed) return std::make_unique<DistributedOptimizer>(be, store, cfg, groups);
  return std::make_unique<AdamW>(be, store, cfg, groups);
}

}  // namespace origami
