// make_plan(): ranked fastest first, everything it accepts validates and fits; the two ways to
// end with nothing are errors naming what to change.
#include <gtest/gtest.h>

#include "base/error.h"
#include "plan/planner.h"
#include "plan_test_config.h"
#include "train/memory_estimate.h"

namespace origami {
namespace {

std::string error_of(const Config& cfg, int world, const ClusterSpec& cluster) {
  try {
    make_plan(cfg, world, cluster);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Planner, RanksFittingValidLayouts) {
  const Config base = test::tiny_config();
  const Plan plan = make_plan(base, 8, test::test_cluster());
  ASSERT_FALSE(plan.ranked.empty());
  for (size_t i = 1; i < plan.ranked.size(); ++i)
    EXPECT_LE(plan.ranked[i - 1].prediction.step_ms, plan.ranked[i].prediction.step_ms);
  for (const auto& r : plan.ranked) {
    EXPECT_LE(r.prediction.memory_bytes, plan.device_bytes);
    EXPECT_GT(r.prediction.tokens_per_s, 0);
  }
  EXPECT_EQ(plan.ranked.size() + plan.too_large.size(), plan.space.valid.size());
}

TEST(Planner, MemoryIsTheLargestStage) {
  Layout pp2{.pp = 2, .micro_batch_size = 4, .dp = 2, .edp = 2, .micro_batches = 2};
  const Config cfg = apply_layout(test::tiny_config(), pp2);
  const StepPrediction p = predict_step(cfg, 4, test::test_cluster());
  const ParallelLayout layout = ParallelLayout::from_config(cfg.parallel, 4);
  EXPECT_DOUBLE_EQ(p.memory_bytes, std::max(estimate_memory(cfg, layout, 0).total(),
                                            estimate_memory(cfg, layout, 1).total()));
}

TEST(Planner, FastMemoryEqualsEstimateMemoryForEveryLayout) {
  // layout_memory() swaps estimate_memory's pipeline term at a short schedule for the real one;
  // it must agree with calling estimate_memory() on every stage, for every layout.
  const Config base = test::tiny_config();
  int checked = 0;
  for (const Layout& l : enumerate_layouts(base, 8).valid) {
    if (l.pp == 1 && checked % 7) continue;
    const Config cfg = apply_layout(base, l);
    const ParallelLayout layout = ParallelLayout::from_config(cfg.parallel, 8);
    double direct = 0;
    for (int s = 0; s < l.pp; ++s) direct = std::max(direct, estimate_memory(cfg, layout, s).total());
    EXPECT_NEAR(layout_memory(cfg, 8).first, direct, 1e-6 * direct) << describe_layout(l);
    ++checked;
  }
  EXPECT_GT(checked, 100);
  // Deeper pipelines (the middle stages' shortcut), at 16 ranks of an 8-layer model.
  Config deep = base;
  deep.model.num_layers = 8;
  int deep_checked = 0;
  for (const Layout& l : enumerate_layouts(deep, 16).valid) {
    if (l.pp < 4 || (deep_checked++ % 5)) continue;
    const Config cfg = apply_layout(deep, l);
    const ParallelLayout layout = ParallelLayout::from_config(cfg.parallel, 16);
    double direct = 0;
    for (int s = 0; s < l.pp; ++s) direct = std::max(direct, estimate_memory(cfg, layout, s).total());
    EXPECT_NEAR(layout_memory(cfg, 16).first, direct, 1e-6 * direct) << describe_layout(l);
  }
  EXPECT_GT(deep_checked, 50);
}

// Planned at --imbalance 1.6, a dropless layout's overlay reserves that: the config it makes
// has the trainer's start-up estimate (a balanced router, the reserve as floor) equal to the
// memory the planner checked for every EP layout. A capacity config gets no reserve line.
TEST(Planner, TheOverlayReservesWhatTheMemoryCheckCounted) {
  const Config base = test::tiny_config();  // dropless, 8 experts top-2
  const CostOptions skewed{.routing_imbalance = 1.6};
  const Plan plan = make_plan(base, 8, test::test_cluster(), skewed);
  int ep_layouts = 0;
  for (size_t i = 0; i < plan.ranked.size(); i += 5) {
    const auto& [l, p] = plan.ranked[i];
    Config cfg = base;
    for (const auto& a : plan_assignments(base, l, skewed)) apply_override(cfg, a);
    EXPECT_DOUBLE_EQ(cfg.moe.dropless_reserve, 1.6);
    const ParallelLayout layout = ParallelLayout::from_config(cfg.parallel, 8);
    double at_startup = 0;
    for (int s = 0; s < l.pp; ++s)
      at_startup = std::max(at_startup, estimate_memory(cfg, layout, s).total());
    EXPECT_DOUBLE_EQ(at_startup, p.memory_bytes) << describe_layout(l);
    ep_layouts += l.ep > 1;
  }
  EXPECT_GT(ep_layouts, 0);
  Config capped = base;
  capped.moe.capacity_factor = 1.5;
  EXPECT_EQ(plan_assignments(capped, plan.ranked[0].layout, skewed),
            layout_assignments(plan.ranked[0].layout));
  EXPECT_EQ(plan_assignments(base, plan.ranked[0].layout),  // balanced: nothing to reserve
            layout_assignments(plan.ranked[0].layout));
}

TEST(Planner, AWorldNoLayoutFits) {
  // 7 ranks: TP, CP, EP and PP must be 1 (4 heads, 8 experts, 4 layers), DP 7 does not divide
  // the global batch of 16.
  const std::string e = error_of(test::tiny_config(), 7, test::test_cluster());
  EXPECT_NE(e.find("no parallel layout is valid for --world 7"), std::string::npos) << e;
  EXPECT_NE(e.find("training.global_batch_size"), std::string::npos) << e;
}

TEST(Planner, AModelThatDoesNotFit) {
  ClusterSpec small = test::test_cluster();
  small.device_memory_gib = 0.001;  // 1 MiB per rank
  const std::string e = error_of(test::tiny_config(), 8, small);
  EXPECT_NE(e.find("does not fit"), std::string::npos) << e;
  EXPECT_NE(e.find("over)"), std::string::npos) << e;
  EXPECT_NE(e.find("device_memory_gib"), std::string::npos) << e;
}

}  // namespace
}  // namespace origami
