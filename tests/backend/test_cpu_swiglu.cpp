// Tests of the SwiGLU ops on a fused [rows, 2F] input: the forward against a double reference,
// the backward against central finite differences of L = sum(out * R).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "backend_test_util.h"

namespace origami {
namespace {

using namespace origami::testing;

TEST(CpuSwiglu, ForwardMatchesReference) {
  auto be = make_backend("cpu");
  const int64_t rows = 3, F = 7;
  auto h = random_vector(rows * 2 * F, 4, -4.f, 4.f);
  std::vector<float> out(rows * F);
  be->swiglu_forward(h.data(), out.data(), rows, F);
  std::vector<double> want(rows * F);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < F; ++j) {
      const double g = h[r * 2 * F + j], u = h[r * 2 * F + F + j];
      want[r * F + j] = g / (1.0 + std::exp(-g)) * u;
    }
  }
  // a few fp32 operations per entry (exp, divide, two products): 1e-6 relative.
  expect_near_rel(out, want, 1e-6, 1e-7, "swiglu out");
}

TEST(CpuSwiglu, BackwardMatchesFiniteDifferences) {
  auto be = make_backend("cpu");
  const int64_t rows = 4, F = 6;
  auto h = random_vector(rows * 2 * F, 5, -3.f, 3.f);
  auto R = random_vector(rows * F, 6);
  std::vector<float> out(rows * F), dh(rows * 2 * F);
  auto loss = [&] {
    be->swiglu_forward(h.data(), out.data(), rows, F);
    return weighted_sum(out, R);
  };
  // h = 1e-3: truncation error h^2 f'''/6 ~ 1e-7 (f''' of silu is O(1)); fp32 noise in L
  // (~24 terms of size ~1, 6e-8 each) / 2h ~ 1e-4 absolute against gradients of O(1): 2e-3.
  auto fd = finite_diff(h, loss, 1e-3);
  be->swiglu_backward(R.data(), h.data(), dh.data(), rows, F);
  expect_grad_near(dh, fd, 2e-3, "dh");
}

}  // namespace
}  // namespace origami
