// Tests of the embedding and SwiGLU ops: forwards against direct references, backwards against
// central finite differences of L = sum(out * R), and the accumulate (+=) contract of dtable.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "backend_test_util.h"

namespace origami {
namespace {

using namespace origami::testing;

TEST(CpuEmbedding, ForwardGathersRowsAndZeroesPadding) {
  auto be = make_backend("cpu");
  const int64_t vocab = 6, dim = 5;
  auto table = random_vector(vocab * dim, 1);
  std::vector<int32_t> ids = {3, 0, 3, -1, 5};
  std::vector<float> out(ids.size() * dim, 7.f);
  be->embedding_forward(ids.data(), table.data(), out.data(), int64_t(ids.size()), dim);
  for (size_t i = 0; i < ids.size(); ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      const float want = ids[i] < 0 ? 0.f : table[ids[i] * dim + j];
      ASSERT_EQ(out[i * dim + j], want) << i << "," << j;
    }
  }
}

TEST(CpuEmbedding, BackwardAccumulatesRepeatedIdsAndAcrossCalls) {
  auto be = make_backend("cpu");
  const int64_t vocab = 5, dim = 130;  // dim spans three column blocks
  std::vector<int32_t> ids = {2, 4, 2, -1, 0, 2};
  const int64_t n = int64_t(ids.size());
  auto dout = random_vector(n * dim, 2);
  auto table = random_vector(vocab * dim, 3);
  // L = sum(embedding(table) * dout): its gradient wrt table is what backward accumulates.
  std::vector<float> out(n * dim);
  auto loss = [&] {
    be->embedding_forward(ids.data(), table.data(), out.data(), n, dim);
    return weighted_sum(out, dout);
  };
  // L is linear in the table, so the finite difference is exact up to fp32 rounding of the
  // <= 3 summed products (~1e-7 relative): 1e-4 is a wide but meaningful bound.
  auto fd = finite_diff(table, loss, 1e-2);
  std::vector<float> dtable(vocab * dim, 0.f);
  be->embedding_backward(dout.data(), ids.data(), dtable.data(), n, dim);
  expect_grad_near(dtable, fd, 1e-4, "dtable");
  EXPECT_EQ(dtable[1 * dim + 7], 0.f);  // id 1 never appears
  auto once = dtable;
  be->embedding_backward(dout.data(), ids.data(), dtable.data(), n, dim);
  // (a+b+c) + a+b+c differs from 2(a+b+c) only by fp32 rounding of <= 6 additions: 1e-6.
  for (size_t i = 0; i < dtable.size(); ++i) {
    ASSERT_NEAR(dtable[i], 2.f * once[i], 1e-6f * (1.f + std::abs(once[i]))) << i;
  }
}

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
