// Tests of the router (softmax, stable top-k, renormalised weights, lse; exact backward through
// renormalisation, softmax, the balance-loss dprobs and the z-loss dlse) and of the MoE token
// permutation ops (counting sort with dropped slots, permute/unpermute and their backwards).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <ostream>
#include <random>

#include "backend/backend.h"
#include "backend_test_util.h"
#include "base/error.h"

namespace origami {
namespace {

using namespace origami::testing;

// Logits whose values within a row are at least ~0.5 apart (a shuffled ladder plus small noise),
// so a finite-difference step cannot change the top-k selection.
std::vector<float> separated_logits(int64_t N, int64_t E, uint32_t seed) {
  std::mt19937 gen(seed);
  auto noise = random_vector(N * E, seed + 1, -0.05f, 0.05f);
  std::vector<float> z(N * E);
  std::vector<int> order(E);
  for (int64_t t = 0; t < N; ++t) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), gen);
    for (int64_t e = 0; e < E; ++e) z[t * E + e] = 0.6f * (order[e] - E / 2.f) + noise[t * E + e];
  }
  return z;
}

TEST(CpuRouter, ForwardSoftmaxTopkWeightsLse) {
  auto be = make_backend("cpu");
  const int64_t N = 5, E = 7;
  auto z = random_vector(N * E, 1, -3.f, 3.f);
  for (int64_t k : {1, 2, 3}) {
    for (bool renorm : {false, true}) {
      std::vector<float> probs(N * E), w(N * k), lse(N);
      std::vector<int32_t> idx(N * k);
      be->router_forward(z.data(), probs.data(), idx.data(), w.data(), lse.data(), N, E, k,
                         renorm);
      for (int64_t t = 0; t < N; ++t) {
        double mx = -1e30, den = 0;
        for (int64_t e = 0; e < E; ++e) mx = std::max(mx, double(z[t * E + e]));
        for (int64_t e = 0; e < E; ++e) den += std::exp(z[t * E + e] - mx);
        // fp64 sums, one fp32 rounding of lse (|lse| <= ~4): 1e-6 relative to 1 + |max|.
        EXPECT_NEAR(lse[t], mx + std::log(den), 1e-6 * (1 + std::abs(mx)));
        std::vector<int> order(E);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int a, int b) { return z[t * E + a] > z[t * E + b]; });
        double sel = 0;
        for (int64_t s = 0; s < k; ++s) sel += std::exp(z[t * E + order[s]] - mx) / den;
        for (int64_t e = 0; e < E; ++e) {
          // Probabilities <= 1 rounded once to fp32 (6e-8): 1e-6, also for the weights below.
          EXPECT_NEAR(probs[t * E + e], std::exp(z[t * E + e] - mx) / den, 1e-6);
        }
        for (int64_t s = 0; s < k; ++s) {
          ASSERT_EQ(idx[t * k + s], order[s]) << "token " << t << " slot " << s;
          const double p = std::exp(z[t * E + order[s]] - mx) / den;
          EXPECT_NEAR(w[t * k + s], renorm ? p / sel : p, 1e-6);
        }
      }
    }
  }
}

TEST(CpuRouter, TiesGoToTheLowerExpertIndex) {
  auto be = make_backend("cpu");
  const int64_t E = 5;
  std::vector<float> z = {1.f, 3.f, 3.f, 0.f, 3.f, /* row 2 */ 2.f, 2.f, 2.f, 2.f, 2.f};
  std::vector<float> probs(2 * E), w(2 * 3), lse(2);
  std::vector<int32_t> idx(2 * 3);
  be->router_forward(z.data(), probs.data(), idx.data(), w.data(), lse.data(), 2, E, 3, true);
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 4, 0, 1, 2}));
  for (float x : w) EXPECT_FLOAT_EQ(x, 1.f / 3.f);
}

struct RouterCase {
  int64_t k;
  bool renormalize, with_dprobs, with_dlse;
};

void PrintTo(const RouterCase& c, std::ostream* os) {
  *os << "k=" << c.k << " renormalize=" << c.renormalize << " dprobs=" << c.with_dprobs
      << " dlse=" << c.with_dlse;
}

class CpuRouterBackward : public ::testing::TestWithParam<RouterCase> {};

TEST_P(CpuRouterBackward, MatchesFiniteDifferences) {
  const RouterCase c = GetParam();
  auto be = make_backend("cpu");
  const int64_t N = 4, E = 6, k = c.k;
  auto z = separated_logits(N, E, 10);
  auto Rw = random_vector(N * k, 11), Rp = random_vector(N * E, 12), Rl = random_vector(N, 13);
  std::vector<float> probs(N * E), w(N * k), lse(N);
  std::vector<int32_t> idx(N * k);
  auto loss = [&] {
    be->router_forward(z.data(), probs.data(), idx.data(), w.data(), lse.data(), N, E, k,
                       c.renormalize);
    double L = weighted_sum(w, Rw);
    if (c.with_dprobs) L += weighted_sum(probs, Rp);
    if (c.with_dlse) L += weighted_sum(lse, Rl);
    return L;
  };
  // h = 1e-3 on logits of O(1): softmax truncation error ~h^2 = 1e-6; fp32 noise of L (~30
  // terms, ~1e-7 each, summed ~1e-6) / 2h ~ 5e-4 absolute worst case, typically 1e-4, against
  // gradients ~0.05..0.5; the bound 1e-2 floored at 5% of the largest entry covers it.
  auto fd = finite_diff(z, loss, 1e-3);
  loss();
  std::vector<float> dz(N * E, 9.f);
  be->router_backward(Rw.data(), c.with_dprobs ? Rp.data() : nullptr,
                      c.with_dlse ? Rl.data() : nullptr, probs.data(), idx.data(), w.data(),
                      dz.data(), N, E, k, c.renormalize);
  expect_grad_near(dz, fd, 1e-2, "dlogits");
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuRouterBackward,
                         ::testing::Values(RouterCase{1, false, false, false},
                                           RouterCase{1, true, true, true},  // w == 1: only dprobs/dlse
                                           RouterCase{2, false, false, false},
                                           RouterCase{2, true, false, false},
                                           RouterCase{2, true, true, true},
                                           RouterCase{2, false, true, false},
                                           RouterCase{3, true, false, true}),
                         [](const auto& info) {
                           const RouterCase& c = info.param;
                           return "k" + std::to_string(c.k) + (c.renormalize ? "_renorm" : "") +
                                  (c.with_dprobs ? "_dprobs" : "") + (c.with_dlse ? "_dlse" : "");
                         });

TEST(CpuRouterBackwardRenormK1, GradientVanishes) {
  // k = 1 with renormalisation: the weight is identically 1, so only dprobs/dlse reach logits.
  auto be = make_backend("cpu");
  const int64_t N = 3, E = 4;
  auto z = separated_logits(N, E, 20);
  auto Rw = random_vector(N, 21);
  std::vector<float> probs(N * E), w(N), lse(N), dz(N * E, 9.f);
  std::vector<int32_t> idx(N);
  be->router_forward(z.data(), probs.data(), idx.data(), w.data(), lse.data(), N, E, 1, true);
  be->router_backward(Rw.data(), nullptr, nullptr, probs.data(), idx.data(), w.data(), dz.data(),
                      N, E, 1, true);
  // (dw - dw * 1) / S is exactly 0 in fp64; only dlse/dprobs terms could add: none. 1e-7.
  for (float g : dz) EXPECT_NEAR(g, 0.f, 1e-7f);
}

TEST(CpuPermute, IndicesCountingSortWithDroppedSlots) {
  auto be = make_backend("cpu");
  const int64_t N = 5, k = 2, E = 3;
  std::vector<int32_t> idx = {2, 0, /**/ 1, -1, /**/ 2, 1, /**/ -1, -1, /**/ 0, 2};
  std::vector<int64_t> counts(E, 99);
  std::vector<int32_t> row(N * k, 99);
  be->moe_permute_indices(idx.data(), N, k, E, counts.data(), row.data());
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 2, 3}));
  // expert 0: (t0,s1) (t4,s0) -> rows 0,1; expert 1: (t1,s0) (t2,s1) -> 2,3;
  // expert 2: (t0,s0) (t2,s0) (t4,s1) -> 4,5,6; unrouted slots -> -1.
  EXPECT_EQ(row, (std::vector<int32_t>{4, 0, 2, -1, 5, 3, -1, -1, 1, 6}));
  idx[3] = 3;  // expert 3 does not exist
  EXPECT_THROW(be->moe_permute_indices(idx.data(), N, k, E, counts.data(), row.data()), Error);
}

TEST(CpuPermute, IndicesAreStableAndContiguousOnRandomRouting) {
  auto be = make_backend("cpu");
  const int64_t N = 40, k = 3, E = 5;
  std::mt19937 gen(7);
  std::vector<int32_t> idx(N * k);
  for (auto& e : idx) e = int32_t(gen() % (E + 1)) - 1;  // about one slot in six dropped
  std::vector<int64_t> counts(E);
  std::vector<int32_t> row(N * k);
  be->moe_permute_indices(idx.data(), N, k, E, counts.data(), row.data());
  int64_t total = 0, start = 0;
  for (int64_t e = 0; e < E; ++e) total += counts[e];
  std::vector<int> seen(total, 0);
  for (int64_t e = 0; e < E; ++e) {
    int32_t expect_row = int32_t(start);  // (token, slot) order within an expert
    for (int64_t i = 0; i < N * k; ++i) {
      if (idx[i] != e) continue;
      ASSERT_EQ(row[i], expect_row++) << "expert " << e << " entry " << i;
      seen[row[i]]++;
    }
    start += counts[e];
  }
  for (int64_t i = 0; i < N * k; ++i) {
    if (idx[i] < 0) EXPECT_EQ(row[i], -1);
  }
  for (int s : seen) EXPECT_EQ(s, 1);
}

struct PermuteFixture {
  const int64_t N = 5, k = 2, dim = 3, rows = 7;
  std::vector<int32_t> row = {4, 0, 2, -1, 5, 3, -1, -1, 1, 6};
};

TEST(CpuPermute, PermuteAndBackward) {
  auto be = make_backend("cpu");
  PermuteFixture f;
  auto x = random_vector(f.N * f.dim, 30), R = random_vector(f.rows * f.dim, 31);
  std::vector<float> out(f.rows * f.dim, 0.f);
  be->moe_permute(x.data(), f.row.data(), out.data(), f.N, f.k, f.dim);
  for (int64_t i = 0; i < f.N * f.k; ++i) {
    if (f.row[i] < 0) continue;
    for (int64_t j = 0; j < f.dim; ++j) ASSERT_EQ(out[f.row[i] * f.dim + j], x[i / f.k * f.dim + j]);
  }
  auto loss = [&] {
    be->moe_permute(x.data(), f.row.data(), out.data(), f.N, f.k, f.dim);
    return weighted_sum(out, R);
  };
  // Linear gather: finite differences exact up to fp32 rounding (1e-7 / 2h): 1e-4.
  auto fd = finite_diff(x, loss, 1e-2);
  std::vector<float> dx(f.N * f.dim, 9.f);
  be->moe_permute_backward(R.data(), f.row.data(), dx.data(), f.N, f.k, f.dim);
  expect_grad_near(dx, fd, 1e-4, "permute dx");
  for (int64_t j = 0; j < f.dim; ++j) EXPECT_EQ(dx[3 * f.dim + j], 0.f) << "token 3 is unrouted";
}

TEST(CpuPermute, UnpermuteAndBackward) {
  auto be = make_backend("cpu");
  PermuteFixture f;
  auto y = random_vector(f.rows * f.dim, 40), w = random_vector(f.N * f.k, 41, 0.1f, 1.f);
  auto R = random_vector(f.N * f.dim, 42);
  std::vector<float> out(f.N * f.dim, 9.f);
  be->moe_unpermute(y.data(), f.row.data(), w.data(), out.data(), f.N, f.k, f.dim);
  for (int64_t t = 0; t < f.N; ++t) {
    for (int64_t j = 0; j < f.dim; ++j) {
      double want = 0;
      for (int64_t s = 0; s < f.k; ++s) {
        const int32_t r = f.row[t * f.k + s];
        if (r >= 0) want += double(w[t * f.k + s]) * y[r * f.dim + j];
      }
      // <= 2 fp32 products of O(1) summed in fp32 vs a double reference: ~2 ulps, 1e-6.
      EXPECT_NEAR(out[t * f.dim + j], want, 1e-6) << t << "," << j;
    }
  }
  auto loss = [&] {
    be->moe_unpermute(y.data(), f.row.data(), w.data(), out.data(), f.N, f.k, f.dim);
    return weighted_sum(out, R);
  };
  // Bilinear in (y, w): central differences are exact up to fp32 rounding: 1e-4.
  auto fdy = finite_diff(y, loss, 1e-2);
  auto fdw = finite_diff(w, loss, 1e-2);
  std::vector<float> dy(f.rows * f.dim, 9.f), dw(f.N * f.k, 9.f);
  be->moe_unpermute_backward(R.data(), y.data(), f.row.data(), w.data(), dy.data(), dw.data(),
                             f.N, f.k, f.dim);
  expect_grad_near(dy, fdy, 1e-4, "unpermute dy");
  expect_grad_near(dw, fdw, 1e-4, "unpermute dweights");
  EXPECT_EQ(dw[3], 0.f);  // unrouted slot (t1, s1)
}

}  // namespace
}  // namespace origami
