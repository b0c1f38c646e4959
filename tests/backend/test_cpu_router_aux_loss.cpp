// Tests of the router's auxiliary-loss ops on the CPU reference: per-block expert counts
// against a plain loop, the balance-loss value against a direct formula (blocks by rows or by a
// shuffled row_block, routed share on and off, empty blocks), both gradients against finite
// differences of the value, accumulation into *loss, and the argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend_test_util.h"
#include "base/error.h"

namespace origami {
namespace {

using namespace origami::testing;

// Router slots idx [N,k]: distinct experts per row, about one slot in five unused (-1).
std::vector<int32_t> random_slots(int64_t N, int64_t k, int64_t E, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int32_t> idx(size_t(N * k)), experts(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t e = 0; e < E; ++e) experts[size_t(e)] = int32_t(e);
    std::shuffle(experts.begin(), experts.end(), gen);
    for (int64_t s = 0; s < k; ++s) idx[size_t(t * k + s)] = gen() % 5 == 0 ? -1 : experts[size_t(s)];
  }
  return idx;
}

// Each row of a softmax-like [N,E]: positive, summing to 1.
std::vector<float> random_probs(int64_t N, int64_t E, uint32_t seed) {
  auto p = random_vector(size_t(N * E), seed, 0.05f, 1.f);
  for (int64_t t = 0; t < N; ++t) {
    double s = 0;
    for (int64_t i = 0; i < E; ++i) s += p[size_t(t * E + i)];
    for (int64_t i = 0; i < E; ++i) p[size_t(t * E + i)] = float(p[size_t(t * E + i)] / s);
  }
  return p;
}

// Row t's block under the op's rule.
int64_t block_of(const std::vector<int32_t>& row_block, int64_t t, int64_t N, int64_t B) {
  return row_block.empty() ? t / (N / B) : row_block[size_t(t)];
}

std::vector<int64_t> plain_counts(const std::vector<int32_t>& idx,
                                  const std::vector<int32_t>& row_block, int64_t N, int64_t k,
                                  int64_t E, int64_t B) {
  std::vector<int64_t> c(size_t(B * E), 0);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t s = 0; s < k; ++s) {
      const int32_t e = idx[size_t(t * k + s)];
      if (e >= 0) ++c[size_t(block_of(row_block, t, N, B) * E + e)];
    }
  return c;
}

// B blocks of N / B rows each, assigned to rows in a shuffled order.
std::vector<int32_t> shuffled_blocks(int64_t N, int64_t B, uint32_t seed) {
  std::vector<int32_t> rb(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t) rb[size_t(t)] = int32_t(t % B);
  std::mt19937 gen(seed);
  std::shuffle(rb.begin(), rb.end(), gen);
  return rb;
}

const int32_t* or_null(const std::vector<int32_t>& v) { return v.empty() ? nullptr : v.data(); }

TEST(CpuExpertCounts, PerBlockMatchesAPlainLoopWithUnusedSlots) {
  auto be = make_backend("cpu");
  const int64_t N = 24, k = 3, E = 6;
  const auto idx = random_slots(N, k, E, 1);
  ASSERT_NE(std::count(idx.begin(), idx.end(), -1), 0) << "the test needs unused slots";
  for (int64_t B : {1, 3, 4}) {
    for (bool shuffled : {false, true}) {
      const auto rb = shuffled ? shuffled_blocks(N, B, uint32_t(10 + B)) : std::vector<int32_t>{};
      std::vector<int64_t> counts(size_t(B * E), -7);  // poison: every entry must be written
      be->expert_counts_per_block(idx.data(), or_null(rb), N, k, E, B, counts.data());
      EXPECT_EQ(counts, plain_counts(idx, rb, N, k, E, B)) << "B=" << B << " shuffled=" << shuffled;
    }
  }
  // A row_block that leaves block 1 empty: its row of counts is zero.
  std::vector<int32_t> rb(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t) rb[size_t(t)] = t % 2 == 0 ? 0 : 2;
  std::vector<int64_t> counts(size_t(3 * E), -7);
  be->expert_counts_per_block(idx.data(), rb.data(), N, k, E, 3, counts.data());
  EXPECT_EQ(counts, plain_counts(idx, rb, N, k, E, 3));
  for (int64_t i = 0; i < E; ++i) EXPECT_EQ(counts[size_t(E + i)], 0) << i;
}

TEST(CpuExpertCounts, RejectsOutOfRangeArguments) {
  auto be = make_backend("cpu");
  std::vector<int64_t> counts(8);
  std::vector<int32_t> idx{0, 1, 4, -1};  // expert 4 with E = 4
  EXPECT_THROW(be->expert_counts_per_block(idx.data(), nullptr, 2, 2, 4, 1, counts.data()), Error);
  idx = {0, 1, -2, 3};  // -2 is not "unused"
  EXPECT_THROW(be->expert_counts_per_block(idx.data(), nullptr, 2, 2, 4, 1, counts.data()), Error);
  idx = {0, 1, 2, 3};
  std::vector<int32_t> rb{0, 2};  // block 2 with B = 2
  EXPECT_THROW(be->expert_counts_per_block(idx.data(), rb.data(), 2, 2, 4, 2, counts.data()), Error);
  EXPECT_THROW(be->expert_counts_per_block(idx.data(), nullptr, 2, 1, 4, 3, counts.data()), Error)
      << "3 blocks of 2 rows without row_block";
}

TEST(CpuBalanceLoss, HandComputedSmallCase) {
  auto be = make_backend("cpu");
  // Two rows, two experts, both slots on expert 0: f = (1, 0) with routed share or slots = 2,
  // so the value is weight * (p[0,0] + p[1,0]) = 0.5 * (0.75 + 0.5) = 0.625 (exact in fp32).
  const std::vector<float> p{0.75f, 0.25f, 0.5f, 0.5f};
  const std::vector<int64_t> counts{2, 0};
  for (bool share : {false, true}) {
    double loss = 1.0;  // accumulated into
    std::vector<float> dp(4, std::nanf(""));
    be->balance_loss(p.data(), counts.data(), nullptr, 2, 2, 1, share, 2.0, 0.5, 1.0, 3.f, &loss,
                     dp.data());
    EXPECT_EQ(loss, 1.625);
    EXPECT_EQ(dp, (std::vector<float>{1.5f, 0.f, 1.5f, 0.f}));  // 3 * 0.5 * f
  }
}

// The value against sum_b sum_i f[b,i] * (sum of p[t,i] over the block's rows), f from its own
// loop over the counts, for every block layout and both denominators.
TEST(CpuBalanceLoss, ValueMatchesTheDirectFormula) {
  auto be = make_backend("cpu");
  const int64_t N = 30, k = 2, E = 5;
  const auto p = random_probs(N, E, 2);
  auto idx = random_slots(N, k, E, 3);
  const double weight = 0.37;
  const float grad_scale = 0.5f;
  struct Layout {
    int64_t B;
    bool shuffled;
  };
  for (Layout lay : {Layout{1, false}, Layout{3, false}, Layout{3, true}}) {
    auto rb = lay.shuffled ? shuffled_blocks(N, lay.B, 4) : std::vector<int32_t>{};
    // Block 1 routes nothing: every slot of its rows unused (f = 0 for it, d_b clamps to 1).
    auto idx_b = idx;
    if (lay.B == 3)
      for (int64_t t = 0; t < N; ++t)
        if (block_of(rb, t, N, lay.B) == 1)
          for (int64_t s = 0; s < k; ++s) idx_b[size_t(t * k + s)] = -1;
    std::vector<int64_t> counts(size_t(lay.B * E));
    be->expert_counts_per_block(idx_b.data(), or_null(rb), N, k, E, lay.B, counts.data());
    for (bool share : {false, true}) {
      const double slots = double(k * N / lay.B);
      double want = 0;
      std::vector<double> want_grad(size_t(N * E));
      for (int64_t b = 0; b < lay.B; ++b) {
        double routed = 0;
        for (int64_t i = 0; i < E; ++i) routed += double(counts[size_t(b * E + i)]);
        const double d = share ? std::max(routed, 1.0) : slots;
        for (int64_t i = 0; i < E; ++i) {
          const double f = double(counts[size_t(b * E + i)]) / d;
          double p_sum = 0;
          for (int64_t t = 0; t < N; ++t)
            if (block_of(rb, t, N, lay.B) == b) {
              p_sum += p[size_t(t * E + i)];
              want_grad[size_t(t * E + i)] = double(grad_scale) * weight * f;
            }
          want += weight * f * p_sum;
        }
      }
      double loss = 0.25;
      std::vector<float> dp(size_t(N * E), std::nanf(""));
      be->balance_loss(p.data(), counts.data(), or_null(rb), N, E, lay.B, share, slots, weight,
                       1.0, grad_scale, &loss, dp.data());
      // The same fp64 terms summed in another order: ~1e-15 relative.
      EXPECT_NEAR(loss, 0.25 + want, 1e-13 * (0.25 + want)) << "B=" << lay.B << " share=" << share;
      // dprobs is one fp32 rounding of the same double product: within half an ulp, 6e-8 rel.
      expect_near_rel(dp, want_grad, 6e-8, 0, "dprobs");
    }
  }
}

TEST(CpuBalanceLoss, GradientMatchesFiniteDifferencesOfTheValue) {
  auto be = make_backend("cpu");
  const int64_t N = 12, k = 2, E = 4, B = 3;
  auto p = random_probs(N, E, 5);
  const auto idx = random_slots(N, k, E, 6);
  const auto rb = shuffled_blocks(N, B, 7);
  std::vector<int64_t> counts(size_t(B * E));
  be->expert_counts_per_block(idx.data(), rb.data(), N, k, E, B, counts.data());
  const float grad_scale = 0.8f;
  std::vector<float> dp(size_t(N * E));
  for (bool share : {false, true}) {
    // L = grad_scale * value; dprobs is dL/dprobs with the counts held fixed.
    auto value = [&] {
      double loss = 0.0;
      std::vector<float> scratch(size_t(N * E));
      be->balance_loss(p.data(), counts.data(), rb.data(), N, E, B, share, double(k * N / B), 1.3,
                       1.0, grad_scale, &loss, scratch.data());
      return double(grad_scale) * loss;
    };
    // L is linear in p, so a large step has no truncation error; the fp32 rounding of the
    // value (~4: 2.4e-7) / 2h = 1.2e-6 against entries ~0.2: 1e-4 relative. Entries with f = 0
    // do not move L at all (their terms are exactly 0).
    auto fd = finite_diff(p, value, 0.1);
    double loss = 0.0;
    be->balance_loss(p.data(), counts.data(), rb.data(), N, E, B, share, double(k * N / B), 1.3,
                     1.0, grad_scale, &loss, dp.data());
    expect_grad_near(dp, fd, 1e-4, share ? "dprobs (routed share)" : "dprobs (slots)");
  }
}

TEST(CpuBalanceLoss, AccumulatesIntoTheLoss) {
  auto be = make_backend("cpu");
  const int64_t N = 8, E = 3;
  const auto p = random_probs(N, E, 8);
  const std::vector<int64_t> counts{3, 4, 1};
  std::vector<float> dp(size_t(N * E));
  double once = 0.0, twice = 0.0;
  be->balance_loss(p.data(), counts.data(), nullptr, N, E, 1, true, 0.0, 1.0, 1.0, 1.f, &once, dp.data());
  be->balance_loss(p.data(), counts.data(), nullptr, N, E, 1, true, 0.0, 1.0, 1.0, 1.f, &twice, dp.data());
  be->balance_loss(p.data(), counts.data(), nullptr, N, E, 1, true, 0.0, 1.0, 1.0, 1.f, &twice, dp.data());
  ASSERT_GT(once, 0.0);
  // twice = once + value in fp64: one rounding, 2^-53 relative.
  EXPECT_NEAR(twice, 2.0 * once, 1e-15 * once);
}

TEST(CpuBalanceLoss, RejectsOutOfRangeBlocks) {
  auto be = make_backend("cpu");
  std::vector<float> p(4, 0.5f), dp(4);
  std::vector<int64_t> counts(4, 1);
  std::vector<int32_t> rb{0, -1};
  double loss = 0.0;
  EXPECT_THROW(be->balance_loss(p.data(), counts.data(), rb.data(), 2, 2, 2, true, 0.0, 1.0, 1.0, 1.f,
                                &loss, dp.data()), Error);
  EXPECT_THROW(be->balance_loss(p.data(), counts.data(), nullptr, 2, 2, 1, false, 0.0, 1.0, 1.0, 1.f,
                                &loss, dp.data()), Error) << "slots = 0 without routed share";
}

TEST(CpuRouterZLoss, ValueGradientAndAccumulation) {
  auto be = make_backend("cpu");
  const int64_t N = 9;
  auto lse = random_vector(size_t(N), 9, 0.5f, 4.f);
  double want = 0;
  for (float l : lse) want += double(l) * l;
  want /= double(N);
  double loss = 2.0;
  std::vector<float> dl(size_t(N), std::nanf(""));
  const float grad_scale = 0.3f;
  be->router_z_loss(lse.data(), N, grad_scale, &loss, dl.data());
  // The same fp64 sum: exact up to the final rounding, 1e-12 absolute of ~8.
  EXPECT_NEAR(loss, 2.0 + want, 1e-12);
  auto value = [&] {
    double l = 0.0;
    std::vector<float> scratch(static_cast<size_t>(N));
    be->router_z_loss(lse.data(), N, grad_scale, &l, scratch.data());
    return double(grad_scale) * l;
  };
  // L is quadratic: central differences are exact up to the fp32 rounding of the value (~7:
  // 2.4e-7) / 2h = 1.2e-6 against entries >= 0.03: 2e-4 relative.
  auto fd = finite_diff(lse, value, 0.1);
  expect_grad_near(dl, fd, 2e-4, "dlse");
  std::vector<double> want_grad(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t) want_grad[size_t(t)] = double(grad_scale) * 2.0 * lse[size_t(t)] / double(N);
  // One fp32 rounding of the double expression: 6e-8 relative.
  expect_near_rel(dl, want_grad, 6e-8, 0, "dlse formula");
}

}  // namespace
}  // namespace origami
