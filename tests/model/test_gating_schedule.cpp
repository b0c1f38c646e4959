// Tests of the gating schedules (model/moe/gating_schedule.h): temperature and k pinned at chosen
// steps for each annealing shape, the diversify phase and the dense-to-sparse switch, the slot
// count, the Gumbel noise (deterministic, a pure function of the global token index, standard
// Gumbel distributed), and on a tiny model the dense-to-sparse gate's experts per token falling
// from E to the final k as the step advances.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "model/moe/gating_schedule.h"
#include "model/moe_transformer.h"

namespace origami {
namespace {

TEST(GatingSchedule, AnnealShapesAtChosenSteps) {
  // 2.0 -> 0.5 between steps 10 and 40.
  auto at = [](const char* shape, int64_t step) { return anneal_value(shape, 2.0, 0.5, 10, 40, step); };
  for (const char* shape : {"linear", "cosine", "exponential"}) {
    EXPECT_DOUBLE_EQ(at(shape, 0), 2.0) << shape;
    EXPECT_DOUBLE_EQ(at(shape, 10), 2.0) << shape;
    EXPECT_DOUBLE_EQ(at(shape, 40), 0.5) << shape;
    EXPECT_DOUBLE_EQ(at(shape, 1000), 0.5) << shape;
  }
  EXPECT_DOUBLE_EQ(at("linear", 25), 1.25);
  EXPECT_DOUBLE_EQ(at("linear", 16), 1.7);
  EXPECT_NEAR(at("cosine", 25), 1.25, 1e-15);
  EXPECT_NEAR(at("cosine", 16), 0.5 + 0.75 * (1 + std::cos(0.2 * M_PI)), 1e-15);  // 1.856763
  EXPECT_NEAR(at("cosine", 16), 1.8567627457812106, 1e-12);
  EXPECT_NEAR(at("exponential", 25), 1.0, 1e-15);  // geometric mean
  EXPECT_NEAR(at("exponential", 16), 1.5157165665103982, 1e-12);  // 2 * 0.25^0.2
  // A zero-length schedule jumps at its step.
  EXPECT_DOUBLE_EQ(anneal_value("linear", 4, 1, 5, 5, 4), 4);
  EXPECT_DOUBLE_EQ(anneal_value("linear", 4, 1, 5, 5, 5), 1);
}

MoeConfig moe_with(const std::string& kind) {
  MoeConfig m;
  m.num_experts = 8;
  m.top_k = 2;
  m.router.schedule.kind = kind;
  return m;
}

TEST(GatingSchedule, DenseToSparseTemperatureAndSwitch) {
  MoeConfig m = moe_with("dense_to_sparse");
  m.router.schedule.tau_start = 2.0;
  m.router.schedule.tau_end = 0.3;
  m.router.schedule.start_step = 0;
  m.router.schedule.end_step = 10;
  EXPECT_EQ(router_slots(m), 8);
  GateState g = gate_at(m, 0);
  EXPECT_EQ(g.kind, GateKind::dense_to_sparse);
  EXPECT_EQ(g.k, 2);
  EXPECT_DOUBLE_EQ(g.temperature, 2.0);
  EXPECT_DOUBLE_EQ(gate_at(m, 5).temperature, 1.15);
  EXPECT_NEAR(gate_at(m, 9).temperature, 0.47, 1e-15);
  // At end_step the gate becomes plain top-k (EvoMoE's switch to hard routing).
  EXPECT_EQ(gate_at(m, 10).kind, GateKind::topk);
  EXPECT_EQ(gate_at(m, 10).k, 2);
  m.router.schedule.anneal = "exponential";
  EXPECT_NEAR(gate_at(m, 5).temperature, 2.0 * std::sqrt(0.15), 1e-15);
}

TEST(GatingSchedule, TopkAnnealDecreasingAndIncreasing) {
  MoeConfig m = moe_with("topk_anneal");
  m.router.schedule.k_start = 8;  // 8 -> top_k 2 over steps 0..60
  m.router.schedule.end_step = 60;
  EXPECT_EQ(router_slots(m), 8);
  const std::vector<std::pair<int64_t, int64_t>> down = {{0, 8}, {10, 7}, {30, 5}, {45, 4},
                                                         {59, 2}, {60, 2}, {500, 2}};
  for (auto [step, k] : down) {
    EXPECT_EQ(gate_at(m, step).k, k) << "step " << step;
    EXPECT_EQ(gate_at(m, step).kind, GateKind::topk);
  }
  // SMoE-Dropout: k grows 1 -> 4 over steps 0..30 (rounded half away from zero).
  m.top_k = 4;
  m.router.schedule.k_start = 1;
  m.router.schedule.end_step = 30;
  EXPECT_EQ(router_slots(m), 4);
  const std::vector<std::pair<int64_t, int64_t>> up = {{0, 1}, {5, 2}, {15, 3}, {25, 4}, {30, 4}};
  for (auto [step, k] : up) EXPECT_EQ(gate_at(m, step).k, k) << "step " << step;
  m.router.schedule.anneal = "cosine";
  EXPECT_EQ(gate_at(m, 10).k, 2);  // 4 - 3 * (1 + cos(pi/3)) / 2 = 1.75
}

TEST(GatingSchedule, DiversifyPhaseComesFirstAndShiftsTheClock) {
  MoeConfig m = moe_with("dense_to_sparse");
  m.router.schedule.end_step = 10;
  m.router.schedule.diversify.steps = 5;
  for (int64_t s = 0; s < 5; ++s) {
    EXPECT_EQ(gate_at(m, s).kind, GateKind::single_expert) << s;
    EXPECT_EQ(gate_at(m, s).k, 1);
  }
  EXPECT_EQ(gate_at(m, 5).kind, GateKind::dense_to_sparse);
  EXPECT_EQ(gate_at(m, 5).schedule_step, 0);
  EXPECT_DOUBLE_EQ(gate_at(m, 5).temperature, m.router.schedule.tau_start);
  EXPECT_EQ(gate_at(m, 15).kind, GateKind::topk);
  MoeConfig plain = moe_with("static");
  EXPECT_FALSE(schedule_is_active(plain));
  EXPECT_EQ(router_slots(plain), 2);
  plain.router.schedule.diversify.steps = 3;
  EXPECT_TRUE(schedule_is_active(plain));
  EXPECT_EQ(gate_at(plain, 3).kind, GateKind::topk);
}

TEST(GatingSchedule, GumbelNoiseIsAFunctionOfTheGlobalToken) {
  const int64_t E = 4;
  std::vector<float> all(size_t(64 * E)), part(size_t(8 * E)), other_step(all.size()),
      other_layer(all.size());
  gumbel_noise(7, 3, "layers.0.moe.router", 0, 64, E, all.data());
  gumbel_noise(7, 3, "layers.0.moe.router", 40, 8, E, part.data());  // another rank's share
  for (size_t i = 0; i < part.size(); ++i) EXPECT_EQ(part[i], all[size_t(40 * E) + i]);
  gumbel_noise(7, 4, "layers.0.moe.router", 0, 64, E, other_step.data());
  gumbel_noise(7, 3, "layers.1.moe.router", 0, 64, E, other_layer.data());
  EXPECT_NE(all, other_step);
  EXPECT_NE(all, other_layer);
  // Standard Gumbel: mean = Euler-Mascheroni 0.5772, variance pi^2 / 6.
  std::vector<float> many(200000);
  gumbel_noise(1, 0, "x", 0, 50000, E, many.data());
  const double mean = std::accumulate(many.begin(), many.end(), 0.0) / double(many.size());
  double var = 0;
  for (float v : many) var += (v - mean) * (v - mean);
  var /= double(many.size());
  EXPECT_NEAR(mean, 0.5772, 0.01);
  EXPECT_NEAR(var, M_PI * M_PI / 6, 0.03);
}

TEST(GatingSchedule, DenseToSparseExpertsPerTokenFallFromAllToTopK) {
  Config c;
  c.model = {.vocab_size = 64, .hidden_size = 32, .num_layers = 2, .num_attention_heads = 4,
             .num_query_groups = 2, .ffn_hidden_size = 32, .max_seq_length = 16};
  c.training.seq_length = 16;
  c.moe.num_experts = 8;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden_size = 16;
  c.moe.router.schedule.kind = "dense_to_sparse";
  c.moe.router.schedule.tau_start = 2.0;
  c.moe.router.schedule.tau_end = 0.05;
  c.moe.router.schedule.end_step = 20;
  validate(c, 1);
  auto be = make_backend("cpu");
  MoeTransformer model(*be, c, MicroBatchShape{4, 16}, 5);
  std::vector<int32_t> tokens(64), targets(64);
  for (int i = 0; i < 64; ++i) tokens[size_t(i)] = (i * 13 + 5) % 64, targets[size_t(i)] = (i * 7) % 64;
  std::vector<double> per_step;
  for (int64_t step = 0; step <= 21; ++step) {
    model.set_router_clock({.step = step, .first_sequence = 0, .noise = true});
    const ForwardStats st = model.forward(tokens.data(), targets.data(), {});
    int64_t slots = 0;
    for (const auto& layer : st.expert_counts) slots += std::accumulate(layer.begin(), layer.end(), int64_t{0});
    per_step.push_back(double(slots) / (64.0 * 2));
  }
  EXPECT_EQ(per_step[0], 8.0) << "at temperature 2 every expert passes the threshold";
  EXPECT_EQ(per_step[20], 2.0) << "after the schedule: top-2";
  EXPECT_EQ(per_step[21], 2.0);
  EXPECT_LT(per_step[19], 3.0) << "at temperature 0.15 few experts pass the threshold";
  for (size_t s = 1; s < per_step.size(); ++s)  // noise differs per step; the trend must not
    EXPECT_LE(per_step[s], per_step[s - 1] + 0.25) << "step " << s;
  const double first = std::accumulate(per_step.begin(), per_step.begin() + 10, 0.0);
  const double second = std::accumulate(per_step.begin() + 10, per_step.begin() + 20, 0.0);
  EXPECT_GT(first, second + 10.0);
}

}  // namespace
}  // namespace origami
