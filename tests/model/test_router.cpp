// Tests of the router (model/moe/router.h) on one rank: the default gate (softmax, top-k,
// renormalised weights, log-sum-exp) and the sigmoid gate against a direct host computation in
// double; top-k ties going to the lower expert index; Router::backward's weight and input
// gradients (dx accumulated) against central finite differences of
// J = sum(w * dweights) + sum(p * dprobs) + sum(lse * dlse); the expert bias moving the
// selection but not the weights' formula; and the diversify phase's fixed routing (expert 0,
// weight 1) surviving repeated forwards and a top-k forward in between.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "backend/backend_test_util.h"
#include "model/moe/router.h"

namespace origami {
namespace {

using testing::expect_grad_near;
using testing::finite_diff;
using testing::random_vector;

constexpr int64_t kN = 10, kH = 16, kE = 6, kK = 2;
const std::string kPrefix = "layers.0.moe.router";

Config router_config(const std::string& score = "softmax") {
  Config c;
  c.model.hidden_size = kH;
  c.model.init_std = 0.5;  // logits of order 1: the scores differ clearly between experts
  c.moe.num_experts = kE;
  c.moe.top_k = kK;
  c.moe.router.score = score;
  validate(c, 1);
  return c;
}

// One router over kN tokens, its weight and input held on the host (CPU backend memory is host
// memory, so the tensors are read and written directly).
struct Harness {
  Config cfg;
  std::unique_ptr<Backend> be = make_backend("cpu");
  ModelContext ctx;
  ParamStore store;
  Router router;
  std::vector<float> x;

  explicit Harness(const Config& c, uint32_t seed = 1)
      : cfg(c), ctx{*be, cfg, MicroBatchShape{1, kN}, {}}, router(ctx, store, kPrefix),
        x(random_vector(size_t(kN * kH), seed)) {
    store.finalize(*be, 1234);
  }
  Param& weight() { return store[0]; }
  std::vector<float> weight_host() {
    return {weight().value.data(), weight().value.data() + weight().value.numel()};
  }
  void set_weight(const std::vector<float>& w) {
    std::copy(w.begin(), w.end(), weight().value.data());
  }
  void forward() { router.forward(x.data()); }
  std::vector<int32_t> experts() const {
    return {router.experts(), router.experts() + kN * router.slots()};
  }
};

// The gate computed directly, in double, from the fp32 input and weight.
struct Reference {
  std::vector<double> probs, weights, lse;
  std::vector<int32_t> experts;
  double min_margin = INFINITY;  // smallest gap between the k-th and (k+1)-th selection score
};

Reference reference_gate(const std::vector<float>& x, const std::vector<float>& w,
                         const RouterConfig& r, int64_t k, const std::vector<float>& bias = {}) {
  Reference ref;
  const bool sigmoid = r.score == "sigmoid";
  for (int64_t t = 0; t < kN; ++t) {
    std::vector<double> z(static_cast<size_t>(kE)), s(static_cast<size_t>(kE)), sel(static_cast<size_t>(kE));
    for (int64_t e = 0; e < kE; ++e)
      for (int64_t h = 0; h < kH; ++h) z[size_t(e)] += double(x[size_t(t * kH + h)]) * w[size_t(e * kH + h)];
    const double mx = *std::max_element(z.begin(), z.end());
    double den = 0, s_sum = 0;
    for (double v : z) den += std::exp(v - mx);
    for (int64_t e = 0; e < kE; ++e) {
      const double p = std::exp(z[size_t(e)] - mx) / den;
      s[size_t(e)] = sigmoid ? 1.0 / (1.0 + std::exp(-z[size_t(e)])) : p;
      s_sum += s[size_t(e)];
      sel[size_t(e)] = s[size_t(e)] + (bias.empty() ? 0.0 : double(bias[size_t(e)]));
    }
    for (int64_t e = 0; e < kE; ++e)
      ref.probs.push_back(sigmoid ? s[size_t(e)] / s_sum : s[size_t(e)]);
    ref.lse.push_back(mx + std::log(den));
    std::vector<int32_t> order(static_cast<size_t>(kE));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return sel[size_t(a)] > sel[size_t(b)]; });
    ref.min_margin = std::min(ref.min_margin, sel[size_t(order[size_t(k - 1)])] - sel[size_t(order[size_t(k)])]);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += s[size_t(order[size_t(j)])];
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = order[size_t(j)];
      ref.experts.push_back(e);
      ref.weights.push_back(s[size_t(e)] / (r.renormalize ? sum : 1.0) * r.scaling_factor);
    }
  }
  return ref;
}

// The router's outputs against the reference: the same experts, and values within fp32 error.
void expect_matches_reference(const Harness& h, const Reference& ref) {
  // Selection is compared exactly, so no token may sit within fp32 error of a tie.
  ASSERT_GT(ref.min_margin, 1e-4) << "inputs too close to a top-k tie for an exact comparison";
  EXPECT_EQ(h.experts(), ref.experts);
  // fp32 logits (a 16-term dot product) and fp32 outputs: ~1e-6 absolute on values <= 1 and on
  // the log-sum-exp; 1e-5 is ten times that.
  testing::expect_near_rel({h.router.probs(), h.router.probs() + kN * kE}, ref.probs, 0, 1e-5, "probs");
  testing::expect_near_rel({h.router.weights(), h.router.weights() + kN * kK}, ref.weights, 0, 1e-5,
                           "weights");
  testing::expect_near_rel({h.router.lse(), h.router.lse() + kN}, ref.lse, 1e-5, 1e-5, "lse");
}

TEST(Router, DefaultGateMatchesTheHostComputation) {
  for (bool renormalize : {true, false}) {
    SCOPED_TRACE(renormalize ? "renormalised" : "raw softmax weights");
    Config cfg = router_config();
    cfg.moe.router.renormalize = renormalize;
    Harness h(cfg);
    h.forward();
    expect_matches_reference(h, reference_gate(h.x, h.weight_host(), cfg.moe.router, kK));
    if (renormalize)
      for (int64_t t = 0; t < kN; ++t)  // two weights, each within ~6e-8 of its double value
        EXPECT_NEAR(h.router.weights()[t * kK] + h.router.weights()[t * kK + 1], 1.f, 1e-6f);
  }
}

TEST(Router, SigmoidGateMatchesTheHostComputation) {
  Config cfg = router_config("sigmoid");
  cfg.moe.router.scaling_factor = 2.5;  // DeepSeek-V3's scaled weights
  Harness h(cfg);
  h.forward();
  expect_matches_reference(h, reference_gate(h.x, h.weight_host(), cfg.moe.router, kK));
}

TEST(Router, TopKTiesGoToTheLowerExpertIndex) {
  for (const char* score : {"softmax", "sigmoid"}) {
    SCOPED_TRACE(score);
    Harness h(router_config(score));
    // Weight rows 2u (expert 0), u (experts 3, 4) and -u (experts 1, 2, 5), u and x dyadic with
    // few bits, so every logit is exact in any summation order and equal logits are equal bit for
    // bit: with c = <x, u>, c > 0 ties 3 with 4 for the second place, c < 0 ties 1, 2 and 5 for
    // both places, and c = 0 (token 0 is all zeros) ties every expert.
    std::vector<float> u(static_cast<size_t>(kH)), w(size_t(kE * kH));
    for (int64_t j = 0; j < kH; ++j) u[size_t(j)] = float(int(j % 5) - 2) / 4.f;
    const float row_scale[kE] = {2.f, -1.f, -1.f, 1.f, 1.f, -1.f};
    for (int64_t e = 0; e < kE; ++e)
      for (int64_t j = 0; j < kH; ++j) w[size_t(e * kH + j)] = row_scale[e] * u[size_t(j)];
    h.set_weight(w);
    int positive = 0, negative = 0;
    for (int64_t t = 0; t < kN; ++t)
      for (int64_t j = 0; j < kH; ++j)
        h.x[size_t(t * kH + j)] = t == 0 ? 0.f : float(int((t * 7 + j * 3) % 9) - 4) / 8.f;
    h.forward();
    for (int64_t t = 0; t < kN; ++t) {
      double c = 0;
      for (int64_t j = 0; j < kH; ++j) c += double(h.x[size_t(t * kH + j)]) * u[size_t(j)];
      const std::vector<int32_t> want = c > 0 ? std::vector<int32_t>{0, 3}
                                              : c < 0 ? std::vector<int32_t>{1, 2}
                                                      : std::vector<int32_t>{0, 1};
      positive += c > 0, negative += c < 0;
      EXPECT_EQ(std::vector<int32_t>(h.router.experts() + t * kK, h.router.experts() + (t + 1) * kK),
                want)
          << "token " << t << ", <x, u> = " << c;
    }
    EXPECT_GT(positive, 0);
    EXPECT_GT(negative, 0);
  }
}

// Central differences of J over the router weight and the input, against Router::backward.
// Random fixed dweights / dprobs / dlse weigh the three outputs.
void expect_backward_matches_finite_differences(Harness& h, const std::vector<float>& bias = {}) {
  if (!bias.empty()) h.router.set_expert_bias(bias);
  const int64_t S = h.router.slots();
  const std::vector<float> dweights = random_vector(size_t(kN * S), 11);
  const std::vector<float> dprobs = random_vector(size_t(kN * kE), 12);
  const std::vector<float> dlse = random_vector(size_t(kN), 13);
  h.forward();
  const std::vector<int32_t> routing = h.experts();
  int flips = 0;
  auto objective = [&] {
    h.forward();
    if (h.experts() != routing) ++flips;
    double j = 0;
    for (int64_t i = 0; i < kN * S; ++i) j += double(h.router.weights()[i]) * dweights[size_t(i)];
    for (int64_t i = 0; i < kN * kE; ++i) j += double(h.router.probs()[i]) * dprobs[size_t(i)];
    for (int64_t i = 0; i < kN; ++i) j += double(h.router.lse()[i]) * dlse[size_t(i)];
    return j;
  };
  // Analytic: weight gradient from zero, dx accumulated onto a nonzero start.
  h.be->fill(h.weight().grad.data(), 0.f, h.weight().grad.numel());
  const std::vector<float> dx0 = random_vector(size_t(kN * kH), 14);
  std::vector<float> dx = dx0;
  h.forward();
  h.router.backward(dweights.data(), dprobs.data(), dlse.data(), h.x.data(), dx.data());
  std::vector<float> dx_added(dx.size());
  for (size_t i = 0; i < dx.size(); ++i) dx_added[i] = dx[i] - dx0[i];
  const std::vector<float> dw = {h.weight().grad.data(),
                                 h.weight().grad.data() + h.weight().grad.numel()};

  // Step 1e-2: the fp32 rounding of J (~90 output terms of order 1) is ~2.5e-7, so the quotient
  // carries ~2.5e-5 of noise (measured: 3e-4 at step 1e-3, 2.5e-5 at 1e-2), above the O(step^2)
  // truncation. A logit moves by <= 1e-2; the flip check below proves no selection changed.
  const double step = 1e-2;
  std::vector<float> w = h.weight_host();
  const std::vector<double> fd_w = finite_diff(w, [&] { h.set_weight(w); return objective(); }, step);
  h.set_weight(w);
  const std::vector<double> fd_x = finite_diff(h.x, objective, step);
  ASSERT_EQ(flips, 0) << "a finite-difference step changed the routing; the quotient is invalid";
  // 2e-3 relative, floored at 5% of the largest entry (~1): >= 1e-4 absolute, four times the
  // ~2.5e-5 quotient noise above; a wrong term in the backward is off by far more.
  expect_grad_near(dw, fd_w, 2e-3, "router weight grad");
  expect_grad_near(dx_added, fd_x, 2e-3, "router input grad (added to dx)");
}

TEST(Router, DefaultBackwardMatchesFiniteDifferences) {
  Harness h(router_config());
  expect_backward_matches_finite_differences(h);
}

TEST(Router, SigmoidBackwardMatchesFiniteDifferences) {
  Config cfg = router_config("sigmoid");
  cfg.moe.router.scaling_factor = 2.5;
  Harness h(cfg);
  expect_backward_matches_finite_differences(h);
}

TEST(Router, ExpertBiasMovesTheSelectionButNotTheWeights) {
  for (const char* score : {"softmax", "sigmoid"}) {
    SCOPED_TRACE(score);
    Config cfg = router_config(score);
    cfg.moe.router.expert_bias = true;
    Harness h(cfg);
    h.forward();  // zero bias: the same gate path, unshifted
    const std::vector<int32_t> unbiased = h.experts();
    const std::vector<float> weights0(h.router.weights(), h.router.weights() + kN * kK),
        probs0(h.router.probs(), h.router.probs() + kN * kE), lse0(h.router.lse(), h.router.lse() + kN);
    // Expert 5 is pushed up by more than any score gap (scores lie in [0,1]), expert 0 down.
    const std::vector<float> bias = {-2.f, 0.f, 0.f, 0.f, 0.f, 2.f};
    h.router.set_expert_bias(bias);
    h.forward();
    expect_matches_reference(h, reference_gate(h.x, h.weight_host(), cfg.moe.router, kK, bias));
    int moved = 0;
    for (int64_t t = 0; t < kN; ++t) {
      const int32_t* idx = h.router.experts() + t * kK;
      EXPECT_TRUE(idx[0] == 5 || idx[1] == 5) << "token " << t;
      EXPECT_TRUE(idx[0] != 0 && idx[1] != 0) << "token " << t;
      if (std::equal(idx, idx + kK, unbiased.begin() + t * kK)) {
        // Same experts: the same weights, bit for bit (the bias enters the selection only).
        for (int64_t s = 0; s < kK; ++s)
          EXPECT_EQ(h.router.weights()[t * kK + s], weights0[size_t(t * kK + s)]) << "token " << t;
      } else {
        ++moved;
      }
    }
    EXPECT_GT(moved, 0) << "the bias changed no token's selection: the test is vacuous";
    EXPECT_LT(moved, kN) << "no token kept its selection: the weights check above is vacuous";
    // The balance-loss scores and the log-sum-exp ignore the bias.
    EXPECT_EQ(std::vector<float>(h.router.probs(), h.router.probs() + kN * kE), probs0);
    EXPECT_EQ(std::vector<float>(h.router.lse(), h.router.lse() + kN), lse0);
    // Its gradient flows through the unbiased scores of the selected experts.
    Harness g(cfg);
    expect_backward_matches_finite_differences(g, bias);
  }
}

TEST(Router, DiversifyPhaseRoutesEveryTokenToExpertZero) {
  Config cfg = router_config();
  cfg.moe.router.schedule.diversify.steps = 2;  // steps 0 and 1: the single-expert phase
  validate(cfg, 1);
  Harness h(cfg);
  auto expect_single_expert = [&](const char* when) {
    SCOPED_TRACE(when);
    for (int64_t t = 0; t < kN; ++t) {
      EXPECT_EQ(h.router.experts()[t * kK], 0) << "token " << t;
      EXPECT_EQ(h.router.weights()[t * kK], 1.f) << "token " << t;
      for (int64_t s = 1; s < kK; ++s) {
        EXPECT_EQ(h.router.experts()[t * kK + s], -1) << "token " << t;
        EXPECT_EQ(h.router.weights()[t * kK + s], 0.f) << "token " << t;
      }
    }
  };
  h.router.set_clock({.step = 0});
  EXPECT_FALSE(h.router.trains());
  for (int pass = 0; pass < 3; ++pass) {
    h.x = random_vector(h.x.size(), uint32_t(100 + pass));  // the input plays no part
    h.forward();
    expect_single_expert("repeated forward");
  }
  // The router takes no part: backward leaves its gradient and dx alone.
  std::vector<float> dx(size_t(kN * kH), 0.5f);
  const std::vector<float> dw(size_t(kN * kK), 1.f), dp(size_t(kN * kE), 1.f), dl(size_t(kN), 1.f);
  h.be->fill(h.weight().grad.data(), 0.f, h.weight().grad.numel());
  h.router.backward(dw.data(), dp.data(), dl.data(), h.x.data(), dx.data());
  for (float v : dx) ASSERT_EQ(v, 0.5f);
  for (int64_t i = 0; i < h.weight().grad.numel(); ++i) ASSERT_EQ(h.weight().grad.data()[i], 0.f);
  // A top-k forward overwrites the routing buffers; back in the phase, the fixed routing returns.
  h.router.set_clock({.step = 2});
  EXPECT_TRUE(h.router.trains());
  h.forward();
  int not_zero = 0;
  for (int64_t t = 0; t < kN; ++t) not_zero += h.router.experts()[t * kK] != 0;
  EXPECT_GT(not_zero, 0) << "top-k also picked expert 0 first everywhere: the check is vacuous";
  h.router.set_clock({.step = 1});
  h.forward();
  expect_single_expert("after a top-k forward");
  h.forward();
  expect_single_expert("again");
}

}  // namespace
}  // namespace origami
