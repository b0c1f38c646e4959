// Tests of RMSNorm and rotary embedding: forwards against double references, backwards against
// central finite differences of L = sum(out * R), RMSNorm's dw accumulation, RoPE's inverse.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "backend_test_util.h"
#include "base/error.h"

namespace origami {
namespace {

using namespace origami::testing;

TEST(CpuRmsnorm, ForwardMatchesReference) {
  auto be = make_backend("cpu");
  const int64_t rows = 5, dim = 13;
  const float eps = 1e-5f;
  auto x = random_vector(rows * dim, 1, -2.f, 2.f), w = random_vector(dim, 2, 0.5f, 1.5f);
  std::vector<float> y(rows * dim), rstd(rows);
  be->rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, eps);
  std::vector<double> want_y(rows * dim), want_r(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += double(x[r * dim + j]) * x[r * dim + j];
    want_r[r] = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t j = 0; j < dim; ++j) want_y[r * dim + j] = x[r * dim + j] * want_r[r] * w[j];
  }
  // fp32 results of double-accumulated sums: a few ulps, 1e-6 relative.
  expect_near_rel(rstd, want_r, 1e-6, 0, "rstd");
  expect_near_rel(y, want_y, 1e-6, 1e-7, "y");
}

TEST(CpuRmsnorm, BackwardMatchesFiniteDifferencesAndAccumulatesDw) {
  auto be = make_backend("cpu");
  const int64_t rows = 6, dim = 70;  // dim spans two column blocks of the dw pass
  const float eps = 1e-6f;
  auto x = random_vector(rows * dim, 3, -2.f, 2.f), w = random_vector(dim, 4, 0.5f, 1.5f);
  auto R = random_vector(rows * dim, 5);
  std::vector<float> y(rows * dim), rstd(rows);
  auto loss = [&] {
    be->rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, eps);
    return weighted_sum(y, R);
  };
  // RMSNorm is scale-invariant and smooth at |x| ~ 1: with h = 1e-2 the truncation error is
  // ~h^2 = 1e-4 relative; fp32 noise of L (420 terms ~6e-8 each, ~1e-6) / 2h ~ 5e-5 absolute
  // against gradients of ~0.1..1. 5e-3 leaves a 10x margin.
  auto fdx = finite_diff(x, loss, 1e-2);
  auto fdw = finite_diff(w, loss, 1e-2);
  loss();  // restore rstd for the unperturbed x
  std::vector<float> dx(rows * dim, 9.f), dw0 = random_vector(dim, 6);
  auto dw = dw0;
  be->rmsnorm_backward(R.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, dim);
  expect_grad_near(dx, fdx, 5e-3, "dx");
  std::vector<float> dw_delta(dim);
  for (int64_t j = 0; j < dim; ++j) dw_delta[j] = dw[j] - dw0[j];  // dw += grad, not dw = grad
  expect_grad_near(dw_delta, fdw, 5e-3, "dw");
  // Calling backward again adds the same gradient a second time.
  std::vector<float> dw2(dim, 0.f);
  be->rmsnorm_backward(R.data(), x.data(), w.data(), rstd.data(), dx.data(), dw2.data(), rows, dim);
  auto dw_once = dw2;
  be->rmsnorm_backward(R.data(), x.data(), w.data(), rstd.data(), dx.data(), dw2.data(), rows, dim);
  // Equal up to fp32 rounding of the 2 x 6 row contributions added in sequence: 1e-5.
  for (int64_t j = 0; j < dim; ++j) {
    ASSERT_NEAR(dw2[j], 2.f * dw_once[j], 1e-5f * (1.f + std::abs(dw_once[j]))) << j;
  }
}

TEST(CpuRope, ForwardMatchesHalfSplitReference) {
  auto be = make_backend("cpu");
  const int64_t rows = 4, heads = 3, hd = 8;
  const float theta = 10000.f;
  std::vector<int32_t> pos = {0, 1, 17, 4095};
  auto x = random_vector(rows * heads * hd, 7);
  auto y = x;
  be->rope_forward(y.data(), pos.data(), rows, heads, hd, theta);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = std::pow(double(theta), -2.0 * i / hd) * pos[r];
        const int64_t o = (r * heads + h) * hd;
        const double x1 = x[o + i], x2 = x[o + i + hd / 2];
        want[o + i] = x1 * std::cos(a) - x2 * std::sin(a);
        want[o + i + hd / 2] = x1 * std::sin(a) + x2 * std::cos(a);
      }
    }
  }
  // angles in double, cos/sin rounded to fp32, two fp32 products and a sum: ~3 ulps.
  expect_near_rel(y, want, 1e-6, 2e-7, "rope");
  for (int64_t i = 0; i < heads * hd; ++i) ASSERT_EQ(y[i], x[i]) << "position 0 is the identity";
}

TEST(CpuRope, BackwardMatchesFiniteDifferencesAndInvertsForward) {
  auto be = make_backend("cpu");
  const int64_t rows = 3, heads = 2, hd = 6;  // head_dim/2 = 3: odd number of pairs
  std::vector<int32_t> pos = {5, 2, 300};
  auto x = random_vector(rows * heads * hd, 8), R = random_vector(rows * heads * hd, 9);
  std::vector<float> y;
  auto loss = [&] {
    y = x;
    be->rope_forward(y.data(), pos.data(), rows, heads, hd, 500000.f);
    return weighted_sum(y, R);
  };
  // Linear map: finite differences exact up to fp32 rounding of L (~1e-7 / 2h = 5e-6 absolute
  // at h = 1e-2) against O(1) gradients: 1e-4.
  auto fd = finite_diff(x, loss, 1e-2);
  auto dx = R;
  be->rope_backward(dx.data(), pos.data(), rows, heads, hd, 500000.f);
  expect_grad_near(dx, fd, 1e-4, "rope dx");
  // backward(forward(x)) == x up to rounding (rotation by +a then -a): two fp32 rotations of
  // O(1) values with fp32 cos/sin, a few ulps: 1e-6 absolute.
  auto z = x;
  be->rope_forward(z.data(), pos.data(), rows, heads, hd, 500000.f);
  be->rope_backward(z.data(), pos.data(), rows, heads, hd, 500000.f);
  std::vector<double> xd(x.begin(), x.end());
  expect_near_rel(z, xd, 0, 1e-6, "rope round trip");
}

TEST(CpuRope, OddHeadDimIsAnError) {
  auto be = make_backend("cpu");
  std::vector<float> x(5);
  std::vector<int32_t> pos = {1};
  EXPECT_THROW(be->rope_forward(x.data(), pos.data(), 1, 1, 5, 10000.f), Error);
}

}  // namespace
}  // namespace origami
