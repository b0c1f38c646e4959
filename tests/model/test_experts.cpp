// Tests of GroupedExperts (model/moe/experts.h) on one rank: forward over row groups of uneven
// size (empty groups included) against a dense SwiGLU per expert computed directly in double,
// and backward's input gradient (overwritten) and weight gradients (accumulated; untouched for
// an expert without rows) against central finite differences of J = sum(y * g).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/backend_test_util.h"
#include "model/moe/experts.h"

namespace origami {
namespace {

using testing::expect_grad_near;
using testing::finite_diff;
using testing::random_vector;

constexpr int64_t kH = 16, kE = 4, kF = 12;

struct Harness {
  Config cfg;
  std::unique_ptr<Backend> be = make_backend("cpu");
  ModelContext ctx;
  ParamStore store;
  GroupedExperts experts;
  std::vector<int64_t> counts;
  int64_t rows = 0;
  std::vector<float> x, y;

  static Config config() {
    Config c;
    c.model.hidden_size = kH;
    c.model.init_std = 0.3;  // activations of order 1: every path carries a gradient above noise
    c.moe.num_experts = kE;
    c.moe.expert_ffn_hidden_size = kF;
    validate(c, 1);
    return c;
  }
  explicit Harness(std::vector<int64_t> counts_)
      : cfg(config()), ctx{*be, cfg, MicroBatchShape{1, 16}, {}},
        experts(ctx, store, "layers.0.moe.experts", 1), counts(std::move(counts_)) {
    store.finalize(*be, 1234);
    for (int64_t c : counts) rows += c;
    x = random_vector(size_t(rows * kH), 3);
    y.assign(x.size(), 0.f);
  }
  Param& fc1() { return store[0]; }  // [E, 2, F, H]: gate rows, then up rows
  Param& fc2() { return store[1]; }  // [E, H, F]
  void forward() { experts.forward(experts.local_weights(), x.data(), counts, y.data()); }
};

std::vector<float> host(const Tensor& t) { return {t.data(), t.data() + t.numel()}; }
void set(Tensor& t, const std::vector<float>& v) { std::copy(v.begin(), v.end(), t.data()); }

// y = fc2_e (silu(fc1_e,gate x) * fc1_e,up x) per row of expert e, in double.
std::vector<double> reference(Harness& h) {
  const std::vector<float> w1 = host(h.fc1().value), w2 = host(h.fc2().value);
  std::vector<double> y(h.x.size());
  int64_t row = 0;
  for (int64_t e = 0; e < kE; ++e)
    for (int64_t r = 0; r < h.counts[size_t(e)]; ++r, ++row) {
      const float* xr = h.x.data() + row * kH;
      std::vector<double> act(static_cast<size_t>(kF));
      for (int64_t j = 0; j < kF; ++j) {
        double gate = 0, up = 0;
        for (int64_t i = 0; i < kH; ++i) {
          gate += double(w1[size_t(((e * 2 + 0) * kF + j) * kH + i)]) * xr[i];
          up += double(w1[size_t(((e * 2 + 1) * kF + j) * kH + i)]) * xr[i];
        }
        act[size_t(j)] = gate / (1.0 + std::exp(-gate)) * up;
      }
      for (int64_t i = 0; i < kH; ++i)
        for (int64_t j = 0; j < kF; ++j)
          y[size_t(row * kH + i)] += double(w2[size_t((e * kH + i) * kF + j)]) * act[size_t(j)];
    }
  return y;
}

// Row groups of uneven size: an empty one in the middle, and an empty last one.
const std::vector<std::vector<int64_t>> kCounts = {{5, 0, 3, 1}, {2, 6, 1, 0}, {0, 0, 7, 0}};

TEST(GroupedExperts, ForwardIsADenseSwigluPerExpert) {
  for (const auto& counts : kCounts) {
    Harness h(counts);
    h.forward();
    // fp32 GEMMs over 16 and 12 terms and an fp32 SwiGLU: ~1e-7 relative per output element,
    // ~1e-8 absolute on outputs of ~0.1; 1e-5 relative and 1e-6 absolute leave ten times that.
    testing::expect_near_rel(h.y, reference(h), 1e-5, 1e-6, "expert outputs");
  }
}

TEST(GroupedExperts, BackwardMatchesFiniteDifferences) {
  for (const auto& counts : kCounts) {
    SCOPED_TRACE(::testing::PrintToString(counts));
    Harness h(counts);
    const std::vector<float> g = random_vector(h.y.size(), 5);
    auto objective = [&] {
      h.forward();
      return testing::weighted_sum(h.y, g);
    };
    // Analytic: weight grads accumulate onto a nonzero start; dx is overwritten (start: 7).
    const float g0 = 0.25f;
    h.be->fill(h.fc1().grad.data(), g0, h.fc1().grad.numel());
    h.be->fill(h.fc2().grad.data(), g0, h.fc2().grad.numel());
    std::vector<float> dx(h.x.size(), 7.f);
    h.forward();
    h.experts.backward(h.experts.local_weights(), g.data(), h.x.data(), h.counts, dx.data());
    std::vector<float> dw1 = host(h.fc1().grad), dw2 = host(h.fc2().grad);
    // An expert without rows keeps its gradient exactly; the others' start is subtracted.
    const int64_t per1 = 2 * kF * kH, per2 = kH * kF;
    for (int64_t e = 0; e < kE; ++e)
      if (h.counts[size_t(e)] == 0) {
        for (int64_t i = 0; i < per1; ++i) EXPECT_EQ(dw1[size_t(e * per1 + i)], g0) << "expert " << e;
        for (int64_t i = 0; i < per2; ++i) EXPECT_EQ(dw2[size_t(e * per2 + i)], g0) << "expert " << e;
      }
    for (float& v : dw1) v -= g0;
    for (float& v : dw2) v -= g0;

    // The objective is smooth (no routing here), so a large step is safe: J's fp32 rounding puts
    // ~1.5e-5 of noise in the quotient at step 1e-2 (measured; 1e-4 at 1e-3), and the O(step^2)
    // truncation of SwiGLU's curvature is smaller still.
    const double step = 1e-2;
    std::vector<float> w1 = host(h.fc1().value), w2 = host(h.fc2().value);
    const auto fd_w1 = finite_diff(w1, [&] { set(h.fc1().value, w1); return objective(); }, step);
    set(h.fc1().value, w1);
    const auto fd_w2 = finite_diff(w2, [&] { set(h.fc2().value, w2); return objective(); }, step);
    set(h.fc2().value, w2);
    const auto fd_x = finite_diff(h.x, objective, step);
    // 2e-3 relative, floored at 5% of the tensor's largest entry (~1): >= 6e-5 absolute, four
    // times the quotient noise above; a missing or misplaced term is off by far more.
    expect_grad_near(dx, fd_x, 2e-3, "dx");
    expect_grad_near(dw1, fd_w1, 2e-3, "fc1 grad");
    expect_grad_near(dw2, fd_w2, 2e-3, "fc2 grad");
  }
}

}  // namespace
}  // namespace origami
