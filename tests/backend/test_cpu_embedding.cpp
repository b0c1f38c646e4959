// Tests of the embedding ops: the forward gather (padding rows zero) against the table, the
// backward against finite differences of L = sum(out * R), and the accumulate (+=) contract.
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

}  // namespace
}  // namespace origami
