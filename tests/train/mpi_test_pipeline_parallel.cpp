// Layout equivalence for pipeline parallelism, folded with TP, CP, DP and EP: each layout's
// first-step gradients (every parameter of every stage, mapped to its global index) and 10-step
// losses equal a 1-rank run of the same config within fp32 tolerance; the schedules (1f1b,
// interleaved, gpipe) give the same losses; tied embeddings, global-batch balance, the
// dense-to-sparse gate and an uneven split included. ZeRO-1 under PP x DP x EP too.
#include <gtest/gtest.h>

#include <filesystem>

#include "base/logging.h"
#include "comm/communicator.h"
#include "layout_equivalence.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

struct Layout {
  const char* name;
  int world, pp, v = 1, tp = 1, cp = 1, ep = 1, layers = 2;
  const char* schedule = nullptr;  // null: the default (1f1b, interleaved with v > 1)
  int first = 0, last = 0;         // pipeline_first / last_stage_layers
  bool tied = false;
  const char* balance = "micro_batch";
  bool dense_to_sparse = false;
  int global_batch = 8;
};

const Layout kLayouts[] = {
    {.name = "pp2", .world = 2, .pp = 2},
    {.name = "pp2_gpipe", .world = 2, .pp = 2, .schedule = "gpipe"},
    {.name = "pp2_v2", .world = 2, .pp = 2, .v = 2, .layers = 4},
    {.name = "pp2_tied", .world = 2, .pp = 2, .tied = true},
    {.name = "pp2_global_balance", .world = 2, .pp = 2, .layers = 4, .balance = "global_batch"},
    {.name = "pp2_dense_to_sparse", .world = 2, .pp = 2, .dense_to_sparse = true},
    {.name = "pp2_uneven", .world = 2, .pp = 2, .layers = 3, .first = 1},
    {.name = "pp4", .world = 4, .pp = 4, .layers = 4},
    {.name = "pp4_v2", .world = 4, .pp = 4, .v = 2, .layers = 8},
    {.name = "pp2_tp2", .world = 4, .pp = 2, .tp = 2},
    {.name = "pp2_cp2", .world = 4, .pp = 2, .cp = 2},
    {.name = "pp2_dp2_ep2", .world = 4, .pp = 2, .ep = 2, .tied = true},
    {.name = "pp2_tp2_dp2_ep2", .world = 8, .pp = 2, .tp = 2, .ep = 2},
    // 8 ranks: PP4 x v2 over two data-parallel replicas (4 micro-batches each: one group).
    {.name = "pp4_v2_dp2", .world = 8, .pp = 4, .v = 2, .layers = 8, .global_batch = 16},
};

Config layout_config(const Layout& l, bool parallel, const char* schedule) {
  Config c = small_config(std::string(l.name) + (schedule ? std::string("-") + schedule : "") +
                          (parallel ? "" : "-ref"));
  c.model.num_layers = l.layers;
  c.training.global_batch_size = l.global_batch;
  c.model.tie_embeddings = l.tied;
  c.moe.router.load_balance = l.balance;
  if (l.dense_to_sparse) {
    c.moe.router.schedule.kind = "dense_to_sparse";
    c.moe.router.schedule.end_step = 8;  // the switch to top-k happens inside the 10 steps
  }
  if (parallel) {
    c.parallel.pipeline = l.pp;
    c.parallel.virtual_pipeline = l.v;
    if (schedule) c.parallel.pipeline_schedule = schedule;
    else if (l.v > 1) c.parallel.pipeline_schedule = "interleaved";
    c.parallel.pipeline_first_stage_layers = l.first;
    c.parallel.pipeline_last_stage_layers = l.last;
    c.parallel.tensor = l.tp;
    c.parallel.context = l.cp;
    c.parallel.expert = l.ep;
    c.parallel.sequence_parallel = l.tp > 1;
  }
  return c;
}

class PipelineParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::warn);
    world = make_mpi_world();
    solo = world->split(world->rank(), 0, "solo");  // every rank alone, for the reference
  }
  std::unique_ptr<Communicator> world, solo;
};

TEST_F(PipelineParallel, LayoutsMatchTheSingleRankRun) {
  int ran = 0;
  for (const Layout& l : kLayouts) {
    if (l.world != world->size()) continue;
    ++ran;
    expect_layout_matches(layout_config(l, true, l.schedule), layout_config(l, false, nullptr),
                          *world, *solo, l.name,
                          {.zero_ok = false, .same_buffers = false});
  }
  EXPECT_GT(ran, 0) << "no layout for " << world->size() << " ranks";
}

// The schedule changes the order of work, never the result: 1f1b and gpipe give the same losses
// (the same float operations per stage: backward in ascending micro-batch order either way).
TEST_F(PipelineParallel, OneFOneBAndGpipeGiveIdenticalLosses) {
  for (const Layout& l : kLayouts) {
    if (l.world != world->size() || l.v > 1 || l.schedule) continue;
    SCOPED_TRACE(l.name);
    Trainer a(layout_config(l, true, "1f1b"), *world), b(layout_config(l, true, "gpipe"), *world);
    for (int s = 0; s < 4; ++s) EXPECT_EQ(a.train_step().lm_loss, b.train_step().lm_loss) << s;
  }
}

// Forward-only passes go through the pipeline too: after two steps the validation loss and the
// expert-specialisation report of PP2 (and PP2 x v2) equal the 1-rank run's.
TEST_F(PipelineParallel, EvaluationAndExpertReportMatchTheSingleRankRun) {
  if (world->size() != 2) GTEST_SKIP() << "PP2 runs on 2 ranks";
  for (const Layout& l : {Layout{.name = "pp2_eval", .world = 2, .pp = 2},
                          Layout{.name = "pp2_v2_eval", .world = 2, .pp = 2, .v = 2, .layers = 4}}) {
    SCOPED_TRACE(l.name);
    auto with_eval = [](Config c) {
      c.training.eval_interval = 1;
      c.training.eval_steps = 2;
      c.logging.expert_report_interval = 1;
      return c;
    };
    Trainer par(with_eval(layout_config(l, true, nullptr)), *world),
        ref(with_eval(layout_config(l, false, nullptr)), *solo);
    for (int s = 0; s < 2; ++s) par.train_step(), ref.train_step();
    const double a = par.evaluate(), b = ref.evaluate();
    // Per-token losses summed in another order across stages and ranks: fp32 drift ~1e-6.
    EXPECT_NEAR(a, b, 1e-5 * b);
    const ExpertReport ra = par.expert_report(), rb = ref.expert_report();
    ASSERT_EQ(ra.freq.size(), rb.freq.size());
    // Weights equal to fp32 drift may flip a near-tie routing decision: one (token, slot) of the
    // 1024 measured moves a frequency by 1e-3.
    for (size_t d = 0; d < rb.freq.size(); ++d)
      for (size_t layer = 0; layer < rb.freq[d].size(); ++layer)
        for (size_t e = 0; e < rb.freq[d][layer].size(); ++e)
          EXPECT_NEAR(ra.freq[d][layer][e], rb.freq[d][layer][e], 2.5e-3)
              << "dataset " << d << " layer " << layer << " expert " << e;
  }
}

TEST_F(PipelineParallel, DistributedOptimizerMatchesTheSingleRankRun) {
  if (world->size() != 4) GTEST_SKIP() << "PP2 x DP2 x EP2 needs 4 ranks";
  const Layout l{.name = "pp2_dp2_ep2_zero", .world = 4, .pp = 2, .ep = 2};
  expect_zero1_matches(layout_config(l, true, nullptr), layout_config(l, false, nullptr), *world,
                       *solo, l.name, 4);
}

// Checkpoints are global: saved at PP2 x TP2 (tied embeddings, so the last stage's copy is not
// stored twice; expert bias, so every stage's buffers reach the index), the run resumes bit for
// bit in the same layout and continues the uninterrupted losses at PP1 x TP2 x DP2 and at PP4.
TEST_F(PipelineParallel, CheckpointsMoveBetweenPipelineLayouts) {
  if (world->size() != 4) GTEST_SKIP() << "PP2 x TP2 needs 4 ranks";
  namespace fs = std::filesystem;
  const std::string dir = std::string(ORIGAMI_BINARY_DIR) + "/test-ckpt/pipeline-4";
  if (world->rank() == 0) fs::remove_all(dir);
  world->barrier();
  auto with = [](Config c, int pp, int tp, const std::string& suffix) {
    c.parallel.pipeline = pp;
    c.parallel.tensor = tp;
    c.parallel.sequence_parallel = tp > 1;
    c.logging.dir += suffix;
    return c;
  };
  Config base = small_config("pipeline-ckpt");
  base.model.num_layers = 4;
  base.model.tie_embeddings = true;
  base.moe.router.expert_bias = true;
  base.training.train_steps = 6;
  const Config pp2 = with(base, 2, 2, "-pp2");
  const std::vector<double> straight = Trainer(pp2, *world).train();

  Config first = pp2;
  first.training.train_steps = 3;
  first.checkpoint.dir = dir;
  first.checkpoint.save_interval = 3;
  Trainer(first, *world).train();
  auto resume = [&](Config c) {
    c.checkpoint.load = dir;
    Trainer t(c, *world);
    EXPECT_EQ(t.step(), 3);
    return t.train();
  };
  EXPECT_EQ(resume(pp2), std::vector<double>(straight.begin() + 3, straight.end()))
      << "same layout: bit for bit";
  for (const auto& [pp, tp] : {std::pair{1, 2}, std::pair{4, 1}}) {
    const std::vector<double> moved = resume(with(base, pp, tp, fmt::format("-pp{}tp{}", pp, tp)));
    ASSERT_EQ(moved.size(), 3u);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(moved[i], straight[3 + i], 1e-5 * straight[3 + i])
          << "PP" << pp << " TP" << tp << " step " << 4 + i;
  }
}

}  // namespace
}  // namespace origami
