// Training runs with gating schedules on the shipped Brown data: the dense-to-sparse gate's
// experts per token fall from E to the final k over a short run (and the metrics say so), the
// expert-diversify phase routes everything to expert 0 and then spawns every expert from it, and
// the auxiliary-loss-free bias follows its update rule from the global batch's loads.
#include <gtest/gtest.h>

#include <numeric>

#include "base/logging.h"
#include "comm/communicator.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

double experts_per_token(const StepResult& r, const Config& c, size_t layer) {
  const auto& counts = r.expert_counts[layer];
  return double(std::accumulate(counts.begin(), counts.end(), int64_t{0})) /
         double(c.training.global_batch_size * c.training.seq_length);
}

TEST(RouterSchedule, DenseToSparseExpertsPerTokenFallFromAllToTopK) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  Config c = small_config(fmt::format("dts-run-{}", world->size()));
  c.moe.num_experts = 8;
  c.moe.top_k = 2;
  c.parallel.expert = world->size();
  c.training.train_steps = 14;
  c.moe.router.schedule.kind = "dense_to_sparse";
  c.moe.router.schedule.anneal = "exponential";
  c.moe.router.schedule.tau_start = 2.0;
  c.moe.router.schedule.tau_end = 0.02;
  c.moe.router.schedule.end_step = 12;
  Trainer t(c, *world);
  std::vector<std::vector<double>> per_layer(2);
  std::vector<double> losses;
  for (int s = 0; s < c.training.train_steps; ++s) {
    const StepResult r = t.train_step();
    losses.push_back(r.lm_loss);
    for (size_t l = 0; l < 2; ++l) per_layer[l].push_back(experts_per_token(r, c, l));
    EXPECT_EQ(r.gate.kind, s < 12 ? GateKind::dense_to_sparse : GateKind::topk) << s;
  }
  for (size_t l = 0; l < 2; ++l) {
    SCOPED_TRACE(::testing::Message() << "layer " << l);
    EXPECT_EQ(per_layer[l][0], 8.0) << "dense at the start";
    EXPECT_EQ(per_layer[l][12], 2.0) << "top-2 after the schedule";
    EXPECT_EQ(per_layer[l][13], 2.0);
    EXPECT_LT(per_layer[l][11], 2.5) << "cold gate: close to k before the switch";
    for (size_t s = 1; s < per_layer[l].size(); ++s)
      EXPECT_LE(per_layer[l][s], per_layer[l][s - 1] + 0.05) << "step " << s + 1;
  }
  for (double loss : losses) EXPECT_TRUE(std::isfinite(loss));
  EXPECT_LT(losses.back(), losses.front());
}

TEST(RouterSchedule, DiversifyPhaseThenSpawnedExperts) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  Config c = small_config(fmt::format("diversify-{}", world->size()));
  c.parallel.expert = world->size();
  c.moe.router.schedule.diversify = {.steps = 3, .mask_ratio = 0.0, .noise_std = 0.0};
  Trainer t(c, *world);
  const Param& fc1 = t.model().params().find("layers.1.moe.experts.fc1.weight");
  const int64_t per = fc1.value.numel() / fc1.spec.local_shape[0];
  std::vector<float> before(fc1.value.data(), fc1.value.data() + fc1.value.numel());
  for (int s = 0; s < 3; ++s) {
    const StepResult r = t.train_step();
    EXPECT_EQ(r.gate.kind, GateKind::single_expert);
    for (size_t l = 0; l < 2; ++l) {
      EXPECT_EQ(r.expert_counts[l][0], c.training.global_batch_size * c.training.seq_length);
      EXPECT_EQ(experts_per_token(r, c, l), 1.0);
    }
    EXPECT_EQ(r.balance_loss, 0.0);
    EXPECT_EQ(r.z_loss, 0.0);
  }
  // Expert 0 trained; on its holder it differs from the init, the others only decayed.
  if (fc1.spec.shard.offset_along(0) == 0)
    EXPECT_NE(std::vector<float>(fc1.value.data(), fc1.value.data() + per),
              std::vector<float>(before.begin(), before.begin() + per));
  // Spawn (mask 0, noise 0): every expert on every rank equals expert 0 exactly. The optimizer
  // step of the spawn iteration then moves them apart (different tokens per expert).
  ASSERT_TRUE(t.model().spawn_experts_at(3));
  std::vector<float> first(fc1.value.data(), fc1.value.data() + per);
  world->broadcast(first.data(), per, CommDType::f32, 0);  // world rank 0 holds expert 0
  for (int64_t e = 0; e < fc1.spec.local_shape[0]; ++e)
    EXPECT_EQ(std::vector<float>(fc1.value.data() + e * per, fc1.value.data() + (e + 1) * per), first)
        << "local expert " << e;
  EXPECT_FALSE(t.model().spawn_experts_at(4));
}

TEST(RouterSchedule, ExpertBiasFollowsTheGlobalLoad) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  Config c = small_config(fmt::format("bias-{}", world->size()));
  c.parallel.expert = world->size();
  c.moe.router.score = "sigmoid";
  c.moe.router.expert_bias = true;
  c.moe.router.bias_update_rate = 0.01;
  c.moe.router.aux_loss_coeff = 0.0;
  Trainer t(c, *world);
  std::vector<float> bias(4, 0.f);
  for (int s = 0; s < 4; ++s) {
    const StepResult r = t.train_step();
    const auto buffers = t.model().buffers();
    ASSERT_EQ(buffers.size(), 2u);
    const auto& b = buffers.at("layers.0.moe.router.expert_bias");
    const auto& counts = r.expert_counts[0];
    const double mean = double(std::accumulate(counts.begin(), counts.end(), int64_t{0})) / 4;
    for (size_t e = 0; e < 4; ++e) {
      const float want = bias[e] + (counts[e] < mean ? 0.01f : counts[e] > mean ? -0.01f : 0.f);
      EXPECT_EQ(b[e], want) << "step " << s + 1 << " expert " << e;
    }
    bias = b;
    // Replicated: every rank holds the same bias.
    std::vector<float> root = b;
    world->broadcast(root.data(), 4, CommDType::f32, 0);
    EXPECT_EQ(root, b);
  }
}

}  // namespace
}  // namespace origami
