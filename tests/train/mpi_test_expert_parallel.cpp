// Layout equivalence for expert parallelism with MoE parallel folding (dropless and capacity):
// each layout's first-step gradients (every parameter, every local element mapped to its global
// index) and 10-step losses equal a 1-rank run of the same config within fp32 tolerance.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <span>

#include "base/logging.h"
#include "comm/communicator.h"
#include "train/trainer.h"
#include "layout_equivalence.h"
#include "train_test_config.h"

namespace origami {
namespace {

struct Layout {
  const char* name;
  int world, ep, etp, experts;
  std::optional<double> capacity;
  void (*router)(Config&) = nullptr;  // router options / gating schedule (docs/moe.md)
};

// The gating schedules and router options under the same oracle: Gumbel noise keyed by the
// global token, the expert bias updated from global counts and experts spawned from expert 0
// (broadcast over EP) must make every layout reproduce the 1-rank run.
void dense_to_sparse(Config& c) {
  c.moe.router.schedule.kind = "dense_to_sparse";
  c.moe.router.schedule.end_step = 8;  // the switch to top-k happens inside the 10 steps
}
void diversify_dense_to_sparse(Config& c) {
  dense_to_sparse(c);
  c.moe.router.schedule.diversify = {.steps = 2, .mask_ratio = 0.5, .noise_std = 0.01};
  c.moe.router.schedule.gumbel_weights = true;
}
void topk_anneal(Config& c) {
  c.moe.router.schedule.kind = "topk_anneal";
  c.moe.router.schedule.k_start = 4;
  c.moe.router.schedule.end_step = 6;
}
void deepseek_v3(Config& c) {  // sigmoid, scaling, group-limited, bias, sequence balance
  c.moe.router.score = "sigmoid";
  c.moe.router.scaling_factor = 2.5;
  c.moe.router.num_groups = 2;
  c.moe.router.group_topk = 1;
  c.moe.router.expert_bias = true;
  c.moe.router.bias_update_rate = 0.02;
  c.moe.router.load_balance = "sequence";
}

const Layout kRouterLayouts[] = {
    {"ep2_dense_to_sparse", 2, 2, 1, 4, {}, dense_to_sparse},
    {"etp2_topk_anneal", 2, 1, 2, 4, {}, topk_anneal},
    {"ep2_deepseek_v3", 2, 2, 1, 4, {}, deepseek_v3},
    {"dp4_ep2_edp2_diversify_dts", 4, 2, 1, 4, {}, diversify_dense_to_sparse},
    {"ep2_etp2_deepseek_v3", 4, 2, 2, 4, {}, deepseek_v3},
    {"dp8_ep4_etp2_diversify_dts", 8, 4, 2, 4, {}, diversify_dense_to_sparse},
};

// The matrix (W=4: DP4/EP4, DP4/EP2xEDP2; W=8: DP8/EP4xETP2, DP8/EP8 with 16 experts)
// plus 2-rank cases and capacity mode with real drops.
const Layout kLayouts[] = {
    {"ep2", 2, 2, 1, 4, {}},
    {"etp2", 2, 1, 2, 4, {}},
    {"ep2_capacity", 2, 2, 1, 4, 0.75},
    {"dp4_ep4", 4, 4, 1, 4, {}},
    {"dp4_ep2_edp2", 4, 2, 1, 4, {}},
    {"ep2_etp2", 4, 2, 2, 4, {}},
    {"dp8_ep4_etp2", 8, 4, 2, 4, {}},
    {"dp8_ep8_16experts", 8, 8, 1, 16, {}},
};

Config layout_config(const Layout& l, bool parallel) {
  Config c = small_config(std::string(l.name) + (parallel ? "" : "-ref"));
  c.training.global_batch_size = 16;
  c.moe.num_experts = l.experts;
  c.moe.capacity_factor = l.capacity;
  if (l.router) l.router(c);
  if (parallel) {
    c.parallel.expert = l.ep;
    c.parallel.expert_tensor = l.etp;
  }
  return c;
}

void expect_layouts_match(std::span<const Layout> layouts) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");  // every rank alone, for the reference
  int ran = 0;
  for (const Layout& l : layouts) {
    if (l.world != world->size()) continue;
    ++ran;
    const Config par_cfg = layout_config(l, true);
    expect_layout_matches(par_cfg, layout_config(l, false), *world, *solo, l.name,
                          {.zero_ok = par_cfg.moe.router.schedule.diversify.steps > 0,
                           .same_buffers = true});
  }
  EXPECT_GT(ran, 0) << "no layout for " << world->size() << " ranks";
}

TEST(ExpertParallel, LayoutsMatchTheSingleRankRun) { expect_layouts_match(kLayouts); }

TEST(ExpertParallel, GatingSchedulesAndRouterOptionsMatchTheSingleRankRun) {
  expect_layouts_match(kRouterLayouts);
}

TEST(ExpertParallel, DistributedOptimizerMatchesTheSingleRankRun) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");
  for (const Layout& l : kLayouts) {
    if (l.world != world->size()) continue;
    const Config par_cfg = layout_config(l, true);
    expect_zero1_matches(par_cfg, layout_config(l, false), *world, *solo, l.name,
                         int(par_cfg.training.train_steps));
  }
}

TEST(Capacity, LargeEnoughCapacityReproducesDroplessExactly) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  const Layout l{"capacity_nodrop", world->size(), world->size(), 1, 4, {}};
  Config dropless = layout_config(l, true), capacity = dropless, padded = dropless;
  capacity.logging.dir += "-cap";
  padded.logging.dir += "-pad";
  capacity.moe.capacity_factor = 4.0;  // C = N k: no expert can receive more
  padded.moe.capacity_factor = 4.0;
  padded.moe.pad_to_capacity = true;
  dropless.training.train_steps = capacity.training.train_steps = padded.training.train_steps = 4;
  Trainer a(dropless, *world), b(capacity, *world), c(padded, *world);
  for (int s = 0; s < 4; ++s) {
    const StepResult ra = a.train_step(), rb = b.train_step(), rc = c.train_step();
    EXPECT_EQ(ra.lm_loss, rb.lm_loss) << "step " << s + 1;  // the same computation, bit for bit
    EXPECT_EQ(rb.dropped_fraction, 0.0);
    // Zero padding rows change the experts' GEMM shapes only.
    EXPECT_NEAR(ra.lm_loss, rc.lm_loss, 1e-6 * ra.lm_loss) << "step " << s + 1;
  }
}

}  // namespace
}  // namespace origami
