// Tests of CpuBackend::gemm / gemm_batched against a naive double-precision GEMM: every
// transpose combination, padded leading dimensions, alpha/beta, K = 0, zero-sized batch entries,
// and a batch large enough to take the one-GEMM-per-thread path.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <limits>

#include "backend/backend.h"
#include "backend_test_util.h"
#include "base/error.h"

namespace origami {
namespace {

using testing::expect_near_rel;
using testing::random_vector;

struct Problem {
  bool ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  float alpha, beta;
  std::vector<float> a, b, c;
  Problem(bool ta_, bool tb_, int64_t m_, int64_t n_, int64_t k_, int64_t pad, float alpha_,
          float beta_, uint32_t seed)
      : ta(ta_), tb(tb_), m(m_), n(n_), k(k_), alpha(alpha_), beta(beta_) {
    lda = (ta ? m : k) + pad;
    ldb = (tb ? k : n) + pad;
    ldc = n + pad;
    a = random_vector((ta ? k : m) * lda, seed);
    b = random_vector((tb ? n : k) * ldb, seed + 1);
    c = random_vector(m * ldc, seed + 2);
  }
  GemmDesc desc(bool explicit_ld) {
    return GemmDesc{ta, tb, m, n, k, alpha, a.data(), explicit_ld ? lda : 0, b.data(),
                    explicit_ld ? ldb : 0, beta, c.data(), explicit_ld ? ldc : 0};
  }
  // Reference result, entries of C outside the m x n block must stay unchanged.
  std::vector<double> reference() const {
    std::vector<double> r(c.begin(), c.end());
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double av = ta ? a[p * lda + i] : a[i * lda + p];
          const double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
          s += av * bv;
        }
        r[i * ldc + j] = alpha * s + (beta == 0.f ? 0.0 : beta * double(c[i * ldc + j]));
      }
    }
    return r;
  }
};

// fp32 dot products of length k <= 40 with |terms| <= 1: rounding error ~ k * 6e-8 * 1,
// so 1e-5 absolute is ~5x margin; 1e-5 relative covers the large entries.
constexpr double kTol = 1e-5;

TEST(CpuGemm, AllTransposesWithPaddingAlphaBeta) {
  auto be = make_backend("cpu");
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      Problem p(ta, tb, 5, 7, 9, 3, 0.75f, 0.5f, 10 + 2 * ta + tb);
      auto want = p.reference();
      be->gemm(p.desc(true));
      expect_near_rel(p.c, want, kTol, kTol, "gemm ta=" + std::to_string(ta) + " tb=" +
                                                 std::to_string(tb));
    }
  }
}

TEST(CpuGemm, ContiguousDefaultsAndBetaZeroIgnoresGarbage) {
  auto be = make_backend("cpu");
  Problem p(true, false, 6, 4, 11, 0, 1.f, 0.f, 20);
  p.c.assign(p.c.size(), std::numeric_limits<float>::quiet_NaN());  // beta = 0 must overwrite
  auto want = p.reference();
  be->gemm(p.desc(false));
  expect_near_rel(p.c, want, kTol, kTol, "gemm beta=0");
}

TEST(CpuGemm, EmptyInnerDimensionScalesC) {
  auto be = make_backend("cpu");
  Problem p(false, false, 3, 4, 0, 0, 1.f, 2.f, 30);
  auto want = p.reference();
  be->gemm(p.desc(false));
  // k = 0: C = beta * C with beta = 2, an exact fp32 product: exact.
  expect_near_rel(p.c, want, 0, 0, "gemm k=0");
}

TEST(CpuGemm, BadLeadingDimensionIsAnError) {
  auto be = make_backend("cpu");
  Problem p(false, false, 3, 4, 5, 0, 1.f, 0.f, 40);
  GemmDesc d = p.desc(false);
  d.lda = 2;  // rows of A have 5 entries
  EXPECT_THROW(be->gemm(d), Error);
}

TEST(CpuGemm, BatchedMatchesSingleCallsIncludingEmptyEntries) {
  auto be = make_backend("cpu");
  std::vector<Problem> ps;
  for (int i = 0; i < 19; ++i) {
    const int64_t rows = (i % 5 == 0) ? 0 : 1 + i % 7;  // some experts received no tokens
    ps.emplace_back(i % 2, i % 3 == 0, rows, 6 + i % 4, 8 + i % 5, i % 2, 1.f, i % 2 ? 1.f : 0.f,
                    100 + 3 * i);
  }
  std::vector<std::vector<double>> want;
  for (auto& p : ps) want.push_back(p.reference());
  const int saved_threads = omp_get_max_threads();
  for (int threads : {1, 3}) {  // 3 threads and 19 entries takes the per-thread path
    std::vector<Problem> run = ps;
    std::vector<GemmDesc> ds;
    for (auto& p : run) ds.push_back(p.desc(true));
    omp_set_num_threads(threads);
    be->gemm_batched(ds);
    omp_set_num_threads(saved_threads);
    for (size_t i = 0; i < run.size(); ++i) {
      expect_near_rel(run[i].c, want[i], kTol, kTol,
                      "batched entry " + std::to_string(i) + " threads " + std::to_string(threads));
    }
  }
}

}  // namespace
}  // namespace origami
