// Tests of softmax cross-entropy (forward against a double reference with ignored targets,
// backward against finite differences of scale * sum(losses)) and of AdamW (a hand-computed
// two-step trajectory and a double-precision reference with non-trivial state).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "backend/kernel_math.h"
#include "backend_test_util.h"
#include "base/error.h"

namespace origami {
namespace {

using namespace origami::testing;

TEST(CpuCrossEntropy, ForwardWithIgnoredTargets) {
  auto be = make_backend("cpu");
  const int64_t N = 4, V = 11;
  auto z = random_vector(N * V, 1, -5.f, 5.f);
  z[2 * V + 3] = 40.f;  // a dominant logit: exp without the row max would overflow fp32 sums
  std::vector<int32_t> targets = {3, -1, 3, 10};
  std::vector<float> losses(N, 9.f), lse(N);
  be->cross_entropy_forward(z.data(), targets.data(), losses.data(), lse.data(), N, V);
  for (int64_t i = 0; i < N; ++i) {
    double mx = -1e30, den = 0;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, double(z[i * V + j]));
    for (int64_t j = 0; j < V; ++j) den += std::exp(z[i * V + j] - mx);
    const double want_lse = mx + std::log(den);
    // fp64 sums, one fp32 rounding of lse (6e-8 relative): 1e-6 relative plus 1e-6 near 0.
    EXPECT_NEAR(lse[i], want_lse, 1e-6 * std::abs(want_lse) + 1e-6) << i;
    const double want = targets[i] < 0 ? 0.0 : want_lse - z[i * V + targets[i]];
    // lse - z[target] cancels digits, so its error is that of lse (up to |lse| ~ 40): 2e-6 |lse|.
    EXPECT_NEAR(losses[i], want, 2e-6 * std::abs(want_lse) + 1e-6) << i;
  }
  EXPECT_EQ(losses[1], 0.f);
}

TEST(CpuCrossEntropy, BackwardMatchesFiniteDifferences) {
  auto be = make_backend("cpu");
  const int64_t N = 5, V = 9;
  const float scale = 0.37f;  // e.g. 1 / number of loss tokens
  auto z = random_vector(N * V, 2, -2.f, 2.f);
  std::vector<int32_t> targets = {0, 8, -1, 4, 4};
  std::vector<float> losses(N), lse(N);
  auto loss = [&] {
    be->cross_entropy_forward(z.data(), targets.data(), losses.data(), lse.data(), N, V);
    double L = 0;
    for (float l : losses) L += l;
    return scale * L;
  };
  // h = 1e-2: log-softmax curvature is < 1, truncation ~h^2/6 ~ 2e-5 relative; fp32 noise of
  // the 5 losses (~1e-6) / 2h = 5e-5 absolute against entries ~0.01..0.3: bound 5e-3 with the
  // 5%-of-max floor.
  auto fd = finite_diff(z, loss, 1e-2);
  loss();
  std::vector<float> dz(N * V, 9.f);
  be->cross_entropy_backward(z.data(), targets.data(), lse.data(), scale, dz.data(), N, V);
  expect_grad_near(dz, fd, 5e-3, "dlogits");
  for (int64_t j = 0; j < V; ++j) EXPECT_EQ(dz[2 * V + j], 0.f) << "ignored row";
}

TEST(CpuCrossEntropy, TargetOutOfRangeIsAnError) {
  auto be = make_backend("cpu");
  std::vector<float> z(6), losses(2), lse(2);
  std::vector<int32_t> targets = {1, 3};
  try {
    be->cross_entropy_forward(z.data(), targets.data(), losses.data(), lse.data(), 2, 3);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("target 3 of row 1"), std::string::npos) << e.what();
  }
  targets = {-3, 0};  // below -2: neither ignored nor in another shard
  EXPECT_THROW(be->cross_entropy_backward(z.data(), targets.data(), lse.data(), 1.f, z.data(), 2, 3),
               Error);
}

// The one rule both backends and the model's target builder follow.
TEST(CpuCrossEntropy, TargetRule) {
  using kernel_math::valid_target;
  EXPECT_TRUE(valid_target(0, 3) && valid_target(2, 3));
  EXPECT_TRUE(valid_target(-1, 3) && valid_target(Backend::kTargetInOtherShard, 3));
  EXPECT_FALSE(valid_target(3, 3) || valid_target(-3, 3) || valid_target(0, 0));
}

TEST(CpuAdamw, HandComputedTwoSteps) {
  auto be = make_backend("cpu");
  // With a constant gradient g, mhat = g and vhat = g^2 at every step, so each step moves p by
  // lr * (sign(g) + wd * p) (eps = 1e-8 is below fp32 resolution here). By hand:
  //   step 1: 1 - 0.1*(1 + 0.01)  = 0.899      -2 + 0.1*(1 + 0.02) = -1.898   0.5 - 0.1*0.005
  //   step 2: 0.899 - 0.1*(1 + 0.00899) = 0.798101   -1.898 + 0.1*(1 + 0.01898) = -1.796102
  //           0.4995 - 0.1*0.004995 = 0.4990005    (third entry: g = 0, decay only)
  std::vector<float> p = {1.f, -2.f, 0.5f}, g = {0.5f, -0.25f, 0.f}, m(3, 0.f), v(3, 0.f);
  be->adamw(p.data(), g.data(), m.data(), v.data(), 3, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
  // mhat / sqrt(vhat) is +-1 to a few fp32 ulps; p of O(1) then moves by 0.1: 1e-6 (~8 ulps).
  EXPECT_NEAR(p[0], 0.899f, 1e-6);
  EXPECT_NEAR(p[1], -1.898f, 1e-6);
  EXPECT_NEAR(p[2], 0.4995f, 1e-6);
  // 1 - 0.999f is 0.001 only to ~1.3e-5 relative (0.999 is not exact in fp32): 2e-5 relative.
  EXPECT_NEAR(m[0], 0.05, 0.05 * 2e-5);
  EXPECT_NEAR(v[1], 0.001 * 0.0625, 0.001 * 0.0625 * 2e-5);
  be->adamw(p.data(), g.data(), m.data(), v.data(), 3, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 2);
  // fp32 state and parameters of O(1): a few ulps after two steps, 2e-6.
  EXPECT_NEAR(p[0], 0.798101f, 2e-6);
  EXPECT_NEAR(p[1], -1.796102f, 2e-6);
  EXPECT_NEAR(p[2], 0.4990005f, 2e-6);
}

TEST(CpuAdamw, MatchesDoubleReferenceOverSeveralSteps) {
  auto be = make_backend("cpu");
  const int64_t n = 1000;
  const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  auto p = random_vector(n, 3);
  std::vector<double> pd(p.begin(), p.end()), md(n, 0), vd(n, 0);
  std::vector<float> m(n, 0.f), v(n, 0.f);
  for (int64_t t = 1; t <= 4; ++t) {
    auto g = random_vector(n, 100 + uint32_t(t), -0.1f, 0.1f);
    be->adamw(p.data(), g.data(), m.data(), v.data(), n, float(lr), float(b1), float(b2),
              float(eps), float(wd), t);
    for (int64_t i = 0; i < n; ++i) {
      md[i] = b1 * md[i] + (1 - b1) * g[i];
      vd[i] = b2 * vd[i] + (1 - b2) * double(g[i]) * g[i];
      const double mh = md[i] / (1 - std::pow(b1, t)), vh = vd[i] / (1 - std::pow(b2, t));
      pd[i] -= lr * (mh / (std::sqrt(vh) + eps) + wd * pd[i]);
    }
  }
  // Each step moves p by <= ~lr * 3; the fp32 update carries ~1e-6 relative error, and p itself
  // is rounded to fp32 (6e-8 * |p|): 1e-6 absolute after 4 steps.
  expect_near_rel(p, pd, 0, 1e-6, "adamw params");
}

TEST(CpuAdamw, StepZeroIsAnError) {
  auto be = make_backend("cpu");
  float p = 1, g = 1, m = 0, v = 0;
  EXPECT_THROW(be->adamw(&p, &g, &m, &v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.f, 0), Error);
}

}  // namespace
}  // namespace origami
