// Tests of the generalised router op (Backend::router_gate_forward / backward, the host-fallback
// reference every backend inherits): with the default options it reproduces the fused
// router_forward; sigmoid scores, the selection-only expert bias, group-limited top-k, scaling and
// the dense-to-sparse threshold give hand-computed selections and weights; and the backward of
// every option matches central finite differences of L = <w, Rw> + <probs, Rp> + <lse, Rl>.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <ostream>
#include <random>

#include "backend/backend.h"
#include "backend_test_util.h"

namespace origami {
namespace {

using namespace origami::testing;

struct Out {
  std::vector<float> probs, gate, w, lse;
  std::vector<int32_t> idx;
};

Out run(Backend& be, const std::vector<float>& z, const RouterGate& g, int64_t N, int64_t E) {
  Out o{std::vector<float>(size_t(N * E)), std::vector<float>(size_t(N * E)),
        std::vector<float>(size_t(N * g.slots)), std::vector<float>(size_t(N)),
        std::vector<int32_t>(size_t(N * g.slots))};
  be.router_gate_forward(z.data(), g, o.probs.data(), o.gate.data(), o.idx.data(), o.w.data(),
                         o.lse.data(), N, E);
  return o;
}

TEST(RouterGate, DefaultOptionsReproduceTheFusedRouter) {
  auto be = make_backend("cpu");
  const int64_t N = 6, E = 7;
  auto z = random_vector(N * E, 3, -3.f, 3.f);
  for (int64_t k : {1, 2, 3})
    for (bool renorm : {false, true})
      for (bool on_logits : {false, true}) {
        if (on_logits && !renorm) continue;  // top-k of the logits: always sums to 1
        SCOPED_TRACE(::testing::Message() << "k " << k << " renorm " << renorm << " on_logits "
                                          << on_logits);
        std::vector<float> probs(N * E), w(N * k), lse(N);
        std::vector<int32_t> idx(N * k);
        be->router_forward(z.data(), probs.data(), idx.data(), w.data(), lse.data(), N, E, k, renorm);
        const Out o = run(*be, z, {.topk_on_logits = on_logits, .renormalize = renorm, .k = k,
                                   .slots = k}, N, E);
        EXPECT_EQ(o.idx, idx);
        // Double math vs the fused router's fp32 with fp64 sums: weights and lse (O(1)) a few
        // fp32 ulps apart (1e-6); probabilities < 1, one rounding each apart (1e-7).
        for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(o.w[i], w[i], 1e-6) << i;
        for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(o.probs[i], probs[i], 1e-7) << i;
        for (size_t i = 0; i < lse.size(); ++i) EXPECT_NEAR(o.lse[i], lse[i], 1e-6) << i;
      }
}

TEST(RouterGate, SigmoidScoresBiasSelectsButDoesNotWeigh) {
  auto be = make_backend("cpu");
  const std::vector<float> z = {0.f, 1.f, -1.f, 2.f};
  const double s[4] = {0.5, 1 / (1 + std::exp(-1.0)), 1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(-2.0))};
  // Without bias: experts 3 (0.881) and 1 (0.731). A bias of 0.5 on expert 0 lifts it to first
  // place for selection (1.0), but its weight stays made of its score 0.5.
  Out o = run(*be, z, {.sigmoid = true, .k = 2, .slots = 2}, 1, 4);
  EXPECT_EQ(o.idx, (std::vector<int32_t>{3, 1}));
  const std::vector<float> bias = {0.5f, 0.f, 0.f, 0.f};
  o = run(*be, z, {.sigmoid = true, .scaling_factor = 2.5f, .k = 2, .slots = 2, .bias = bias.data()},
          1, 4);
  EXPECT_EQ(o.idx, (std::vector<int32_t>{0, 3}));
  // fp32 outputs of double math: one rounding of values <= 2.5 (1.2e-7): 1e-6.
  EXPECT_NEAR(o.w[0], 2.5 * s[0] / (s[0] + s[3]), 1e-6);
  EXPECT_NEAR(o.w[1], 2.5 * s[3] / (s[0] + s[3]), 1e-6);
  // Balance-loss scores of sigmoid routing: s / sum s (Megatron), unaffected by the bias.
  const double sum = s[0] + s[1] + s[2] + s[3];
  // Values < 1 rounded once to fp32 (<= 6e-8): 1e-7, also for the weights below.
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(o.probs[size_t(e)], s[e] / sum, 1e-7);
  o = run(*be, z, {.sigmoid = true, .renormalize = false, .k = 2, .slots = 2, .bias = bias.data()},
          1, 4);
  EXPECT_NEAR(o.w[0], s[0], 1e-7);
  EXPECT_NEAR(o.w[1], s[3], 1e-7);
}

TEST(RouterGate, GroupLimitedTopkStaysInsideTheBestGroups) {
  auto be = make_backend("cpu");
  // 8 experts in 4 groups of 2; k = 4 from the best 2 groups, ranked by the sum of their top
  // k / group_topk = 2 scores: groups {4,5} (1.84) and {6,7} (1.50) win, so expert 0, the
  // single best expert (0.953), is excluded; unrestricted top-4 would be {0, 4, 5, 7}.
  const std::vector<float> z = {3.f, -3.f, 0.f, 0.5f, 2.5f, 2.4f, 1.f, 1.2f};
  Out o = run(*be, z, {.sigmoid = true, .k = 4, .slots = 4}, 1, 8);
  EXPECT_EQ(o.idx, (std::vector<int32_t>{0, 4, 5, 7}));
  o = run(*be, z, {.sigmoid = true, .k = 4, .slots = 4, .num_groups = 4, .group_topk = 2}, 1, 8);
  EXPECT_EQ(o.idx, (std::vector<int32_t>{4, 5, 7, 6}));
  double sum = 0;
  for (float x : o.w) sum += x;
  // Four weights, each rounded once to fp32 (6e-8): 1e-6.
  EXPECT_NEAR(sum, 1.0, 1e-6);
  // Softmax scores sum differently: p ~ exp(z) makes {0,1} (0.45 of the mass) and {4,5} the
  // best groups, so expert 1 (p = 0.001) is selected ahead of expert 7 (p = 0.06).
  o = run(*be, z, {.k = 4, .slots = 4, .num_groups = 4, .group_topk = 2}, 1, 8);
  EXPECT_EQ(o.idx, (std::vector<int32_t>{0, 4, 5, 1}));
}

TEST(RouterGate, DenseToSparseThresholdDecidesTheNumberOfExperts) {
  auto be = make_backend("cpu");
  const int64_t E = 6;
  // Logits 0.6 apart: gate = softmax(z / 1) = {0.023, 0.042, 0.077, 0.140, 0.255, 0.464}.
  std::vector<float> z(E);
  for (int64_t e = 0; e < E; ++e) z[size_t(e)] = 0.6f * float(e);
  RouterGate g{.k = 2, .slots = E, .dense_to_sparse = true, .temperature = 1.f, .threshold = 0.06f};
  Out o = run(*be, z, g, 1, E);
  EXPECT_EQ(o.idx, (std::vector<int32_t>{5, 4, 3, 2, -1, -1}));
  EXPECT_EQ(o.w[4], 0.f);
  // Weights: the softmax scores of the four, renormalised (the gate only selects).
  double den = 0, sel = 0;
  for (int64_t e = 0; e < E; ++e) den += std::exp(0.6 * e);
  for (int64_t e = 2; e < E; ++e) sel += std::exp(0.6 * e) / den;
  // One fp32 rounding of values < 1 computed in double from fp32 logits (0.6f != 0.6:
  // 4e-8 relative in z): 1e-6, also for the gate weights below.
  EXPECT_NEAR(o.w[0], std::exp(0.6 * 5) / den / sel, 1e-6);
  EXPECT_NEAR(o.gate[2], std::exp(0.6 * 2) / den, 1e-6);
  // Hot: every expert; cold: the top k, never fewer.
  g.temperature = 1000.f;
  o = run(*be, z, g, 1, E);
  EXPECT_EQ(std::count(o.idx.begin(), o.idx.end(), -1), 0);
  g.temperature = 1e-3f;
  o = run(*be, z, g, 1, E);
  EXPECT_EQ(o.idx, (std::vector<int32_t>{5, 4, -1, -1, -1, -1}));
  // Noise enters the gate: lifting expert 0 by 10 makes it the first choice at temperature 1.
  std::vector<float> noise(E, 0.f);
  noise[0] = 10.f;
  g.temperature = 1.f;
  g.noise = noise.data();
  o = run(*be, z, g, 1, E);
  EXPECT_EQ(o.idx[0], 0);
  // Gate weights (EvoMoE --use-gumbel-gates): the selected gate values themselves.
  g.noise = nullptr;
  g.gate_weights = true;
  g.renormalize = false;
  o = run(*be, z, g, 1, E);
  EXPECT_NEAR(o.w[0], std::exp(0.6 * 5) / den, 1e-6);
}

TEST(RouterGate, FewerExpertsThanSlotsLeaveUnusedSlots) {
  auto be = make_backend("cpu");
  auto z = random_vector(3 * 5, 7, -2.f, 2.f);
  const Out o = run(*be, z, {.k = 2, .slots = 4}, 3, 5);
  for (int t = 0; t < 3; ++t) {
    EXPECT_GE(o.idx[size_t(t * 4 + 1)], 0);
    EXPECT_EQ(o.idx[size_t(t * 4 + 2)], -1);
    EXPECT_EQ(o.idx[size_t(t * 4 + 3)], -1);
    // Two weights rounded once each to fp32: 1e-6.
    EXPECT_NEAR(o.w[size_t(t * 4)] + o.w[size_t(t * 4 + 1)], 1.0, 1e-6);
  }
}

// ---- backward against finite differences -----------------------------------------------------

struct GateCase {
  const char* name;
  RouterGate gate;
  bool bias = false, noise = false;
};

void PrintTo(const GateCase& c, std::ostream* os) { *os << c.name; }

class RouterGateBackward : public ::testing::TestWithParam<GateCase> {};

// Logits a shuffled ladder 0.6 apart plus small noise, so a step of 1e-3 never changes the
// selection (scores, groups) and the dense-to-sparse gates stay clear of the threshold.
std::vector<float> ladder(int64_t N, int64_t E, uint32_t seed) {
  std::mt19937 gen(seed);
  auto jitter = random_vector(size_t(N * E), seed + 1, -0.05f, 0.05f);
  std::vector<float> z(size_t(N * E));
  std::vector<int> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), gen);
    for (int64_t e = 0; e < E; ++e)
      z[size_t(t * E + e)] = 0.6f * (float(order[size_t(e)]) - float(E) / 2.f) + jitter[size_t(t * E + e)];
  }
  return z;
}

TEST_P(RouterGateBackward, MatchesFiniteDifferences) {
  const GateCase c = GetParam();
  auto be = make_backend("cpu");
  const int64_t N = 5, E = 8;
  RouterGate g = c.gate;
  auto z = ladder(N, E, 31);
  std::vector<float> bias(E), noise(size_t(N * E));
  for (int64_t e = 0; e < E; ++e) bias[size_t(e)] = 0.011f * float((e * 5) % E);  // reorders
  auto gumbel = random_vector(size_t(N * E), 33, -0.02f, 0.02f);
  if (c.bias) g.bias = bias.data();
  if (c.noise) g.noise = gumbel.data();
  const int64_t S = g.slots;
  auto Rw = random_vector(size_t(N * S), 34), Rp = random_vector(size_t(N * E), 35),
       Rl = random_vector(size_t(N), 36);
  Out o;
  auto loss = [&] {
    o = run(*be, z, g, N, E);
    return weighted_sum(o.w, Rw) + weighted_sum(o.probs, Rp) + weighted_sum(o.lse, Rl);
  };
  loss();
  if (g.dense_to_sparse) {
    // The test is only meaningful away from the threshold; the setup guarantees it.
    int active = 0;
    for (float x : o.gate) {
      ASSERT_GT(std::abs(x - g.threshold), 2e-3f) << "gate too close to the threshold";
      active += x > g.threshold;
    }
    EXPECT_GT(active, int(N * g.k)) << "the threshold should keep more than k experts somewhere";
  }
  const auto idx0 = o.idx;
  // h = 1e-3 on O(1) logits: as in the fused router's test, truncation ~1e-6, fp32 noise of L
  // (~100 terms of ~1e-7) / 2h ~ 1e-4 against gradients of 0.05..0.5.
  auto fd = finite_diff(z, loss, 1e-3);
  loss();
  ASSERT_EQ(o.idx, idx0) << "a finite-difference step changed the selection";
  std::vector<float> dz(size_t(N * E), 9.f);
  be->router_gate_backward(Rw.data(), Rp.data(), Rl.data(), z.data(), o.gate.data(), o.idx.data(),
                           o.w.data(), g, dz.data(), N, E);
  expect_grad_near(dz, fd, 1e-2, std::string("dlogits ") + c.name);
}

INSTANTIATE_TEST_SUITE_P(
    Options, RouterGateBackward,
    ::testing::Values(
        GateCase{"softmax_renorm", {.k = 2, .slots = 2}},
        GateCase{"softmax_plain_scaled", {.renormalize = false, .scaling_factor = 2.5f, .k = 3, .slots = 3}},
        GateCase{"topk_on_logits", {.topk_on_logits = true, .k = 2, .slots = 2}},
        GateCase{"softmax_bias", {.k = 2, .slots = 2}, true},
        GateCase{"sigmoid_renorm_scaled", {.sigmoid = true, .scaling_factor = 2.5f, .k = 2, .slots = 2}},
        GateCase{"sigmoid_plain", {.sigmoid = true, .renormalize = false, .k = 3, .slots = 3}},
        GateCase{"sigmoid_bias_groups",
                 {.sigmoid = true, .k = 4, .slots = 4, .num_groups = 4, .group_topk = 2}, true},
        GateCase{"softmax_groups", {.k = 2, .slots = 2, .num_groups = 2, .group_topk = 1}},
        GateCase{"k_below_slots", {.k = 2, .slots = 5}},
        GateCase{"dts_score_weights",
                 {.k = 2, .slots = 8, .dense_to_sparse = true, .temperature = 1.5f, .threshold = 0.05f},
                 false, true},
        GateCase{"dts_gate_weights",
                 {.renormalize = false, .k = 2, .slots = 8, .dense_to_sparse = true,
                  .temperature = 0.7f, .threshold = 0.03f, .gate_weights = true},
                 false, true},
        GateCase{"dts_gate_weights_renorm_sigmoid",
                 {.sigmoid = true, .k = 1, .slots = 8, .dense_to_sparse = true, .temperature = 2.f,
                  .threshold = 0.08f, .gate_weights = true},
                 false, true},
        GateCase{"dts_sigmoid_scores",
                 {.sigmoid = true, .scaling_factor = 2.f, .k = 2, .slots = 8,
                  .dense_to_sparse = true, .temperature = 1.f, .threshold = 0.035f},
                 false, true}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace origami
