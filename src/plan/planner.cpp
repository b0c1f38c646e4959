// make_plan(): enumerate, measure memory, predict, sort. The two ways to end with nothing are
// errors that say what to change: no valid layout (the world's factors do not suit the model or
// batch) or no layout that fits (the model is too large for the devices).
#include "plan/planner.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/error.h"
#include "base/logging.h"


namespace origami {

std::vector<std::string> plan_assignments(const Config& base, const Layout& l,
                                          const CostOptions& options) {
  std::vector<std::string> out = layout_assignments(l);
  const auto& moe = base.moe;
  if (moe.num_experts > 0 && !moe.capacity_factor &&
      options.routing_imbalance > moe.dropless_reserve)
    out.push_back(fmt::format("moe.dropless_reserve={}", options.routing_imbalance));
  return out;
}

Plan make_plan(const Config& base, int world, const ClusterSpec& cluster,
               const CostOptions& options) {
  Plan plan;
  plan.world = world;
  plan.device_bytes = cluster.device_memory_gib * double(1 << 30);
  plan.space = enumerate_layouts(base, world);
  const std::string src = base.source.empty() ? "<config>" : base.source;
  if (plan.space.valid.empty() && plan.space.example_refusal.empty()) {
    // The quick pre-checks refused everything: ask validate() about the plainest layout.
    Config plain = base;
    set_layout(plain, Layout{.micro_batch_size = base.training.micro_batch_size});
    try {
      validate(plain, world);
    } catch (const Error& e) {
      plan.space.example_refusal = e.what();
    }
  }
  if (plan.space.valid.empty())
    fail("{}: no parallel layout is valid for --world {} ({} combinations of TP, CP, PP, v, EP, "
         "ETP, micro-batch size tried); change --world to a size the model's heads, experts, "
         "layers and training.global_batch_size divide, or training.global_batch_size to a "
         "multiple of --world. One refusal, from validate():\n{}",
         src, world, plan.space.candidates, plan.space.example_refusal);
  for (const Layout& l : plan.space.valid) {
    Config cfg = base;
    set_layout(cfg, l);
    // Memory first: the cost model is not needed for a layout that cannot start.
    const auto [bytes, stage] = layout_memory(cfg, world, options.routing_imbalance);
    if (bytes > plan.device_bytes)
      plan.too_large.push_back({l, bytes, stage});
    else
      plan.ranked.push_back({l, predict_step(cfg, world, cluster, options)});
  }
  std::stable_sort(plan.ranked.begin(), plan.ranked.end(), [](const auto& a, const auto& b) {
    return a.prediction.step_ms < b.prediction.step_ms;
  });
  std::stable_sort(plan.too_large.begin(), plan.too_large.end(),
                   [](const auto& a, const auto& b) { return a.memory_bytes < b.memory_bytes; });
  if (plan.ranked.empty()) {
    const TooLarge& best = plan.too_large.front();
    fail("{}: the model does not fit {} device(s) of {} ({}): all {} valid layouts need more "
         "memory per rank; the smallest, {}, needs {} on stage {} ({} over). Change: more ranks "
         "(--world), a smaller training.micro_batch_size or model, or a cluster file with more "
         "device_memory_gib",
         src, world, format_bytes(plan.device_bytes), cluster.name, plan.space.valid.size(),
         describe_layout(best.layout), format_bytes(best.memory_bytes), best.stage,
         format_bytes(best.memory_bytes - plan.device_bytes));
  }
  return plan;
}

}  // namespace origami
