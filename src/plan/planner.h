// defines: RankedLayout, TooLarge, Plan, make_plan()
// The search: every valid layout (layout_space.h), its per-rank memory (estimate_memory over
// every stage, the largest) against the device, and the survivors ranked by predicted step time
// (cost_model.h). Errors name what to change when nothing is left.
#pragma once
#include <string>
#include <vector>

#include "config/config.h"
#include "plan/cluster_spec.h"
#include "plan/cost_model.h"
#include "plan/layout_space.h"

namespace origami {

struct RankedLayout {
  Layout layout;
  StepPrediction prediction;
};

struct TooLarge {
  Layout layout;
  double memory_bytes = 0;  // the largest stage's estimate
  int stage = 0;
};

struct Plan {
  int world = 1;
  LayoutSpace space;
  std::vector<RankedLayout> ranked;  // fitting layouts, fastest first (ties: enumeration order)
  std::vector<TooLarge> too_large;   // valid but over the device memory, smallest first
  double device_bytes = 0;
};

// Throws Error when no layout validates for `world` (with validate()'s reason for one of them)
// or when none fits the device (with the smallest one's excess).
Plan make_plan(const Config& base, int world, const ClusterSpec& cluster,
               const CostOptions& options = {});

// The config keys origami-plan writes for a layout: its parallel keys, and, for a dropless MoE
// planned at an --imbalance above the config's moe.dropless_reserve, that reserve. The trainer
// then allocates at start-up the expert buffers the memory check counted, so a layout that does
// not fit fails there, not on the step where the router first gets that skewed.
std::vector<std::string> plan_assignments(const Config& base, const Layout& l,
                                          const CostOptions& options = {});

}  // namespace origami
