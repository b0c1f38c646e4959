// The CUDA router auxiliary losses (per-block expert counts, load-balancing loss, z-loss)
// against the CPU reference on random slots and probabilities, poisoned outputs first.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

// The router's auxiliary losses on random slots (some unused) and probabilities, for B = 1, row
// blocks and a shuffled row_block with an empty block, both denominators. Counts are integers
// and each gradient entry is the same double expression rounded once: both compared exactly.
TEST_F(CudaOps, RouterAuxLossesMatchTheReference) {
  const int64_t N = 3000, k = 4, E = 24;
  std::mt19937 gen(++seed);
  std::vector<int32_t> idx(size_t(N * k));
  for (auto& e : idx) e = gen() % 6 == 0 ? -1 : int32_t(gen() % E);
  auto probs = randn(size_t(N * E), ++seed);
  for (float& x : probs) x = std::abs(x);
  auto lse = randn(size_t(N), ++seed, 3.f);
  Buf<int32_t> ci(*cpu, idx), gi(*gpu, idx);
  Buf<float> cp(*cpu, probs), gp(*gpu, probs), cl(*cpu, lse), gl(*gpu, lse);
  for (int64_t B : {int64_t(1), int64_t(6), int64_t(7)}) {
    // B = 7 does not divide N: a shuffled row_block that leaves block 3 empty.
    std::vector<int32_t> rb;
    if (B == 7) {
      rb.resize(size_t(N));
      for (auto& b : rb) b = int32_t(gen() % 6), b += b >= 3;
    }
    Buf<int32_t> crb(*cpu, rb.empty() ? std::vector<int32_t>{0} : rb);
    Buf<int32_t> grb(*gpu, rb.empty() ? std::vector<int32_t>{0} : rb);
    const int32_t* crow = rb.empty() ? nullptr : crb.p;
    const int32_t* grow = rb.empty() ? nullptr : grb.p;
    Buf<int64_t> cc(*cpu, size_t(B * E)), gc(*gpu, size_t(B * E));
    gc.poison();
    cpu->expert_counts_per_block(ci.p, crow, N, k, E, B, cc.p);
    gpu->expert_counts_per_block(gi.p, grow, N, k, E, B, gc.p);
    ASSERT_EQ(gc.get(), cc.get()) << "expert counts per block, B=" << B;
    for (bool share : {false, true}) {
      const std::vector<double> start{0.75};
      Buf<double> closs(*cpu, start), gloss(*gpu, start);
      Buf<float> cdp(*cpu, probs.size()), gdp(*gpu, probs.size());
      gdp.poison();
      const double slots = double(k * N) / double(B);
      cpu->balance_loss(cp.p, cc.p, crow, N, E, B, share, slots, 0.3, 7.0, 0.5f, closs.p, cdp.p);
      gpu->balance_loss(gp.p, gc.p, grow, N, E, B, share, slots, 0.3, 7.0, 0.5f, gloss.p, gdp.p);
      expect_close(gdp.get(), cdp.get(), 0, "balance dprobs");
      // fp64 sums of N*E terms in another order: ~1e-15 relative, 1e-12 leaves a wide margin.
      EXPECT_NEAR(gloss.get()[0], closs.get()[0], 1e-12 * std::abs(closs.get()[0]))
          << "balance loss (accumulated)";
      const double value = closs.get()[0];
      gpu->balance_loss(gp.p, gc.p, grow, N, E, B, share, slots, 0.3, 7.0, 0.5f, gloss.p, gdp.p);
      cpu->balance_loss(cp.p, cc.p, crow, N, E, B, share, slots, 0.3, 7.0, 0.5f, closs.p, cdp.p);
      EXPECT_GT(closs.get()[0], value) << "a second call adds to the loss";
      // Two fp64 accumulations of sums in another order: still ~1e-15 relative.
      EXPECT_NEAR(gloss.get()[0], closs.get()[0], 1e-12 * std::abs(closs.get()[0]))
          << "balance loss, accumulated twice";
    }
  }
  const std::vector<double> start{-1.5};
  Buf<double> closs(*cpu, start), gloss(*gpu, start);
  Buf<float> cdl(*cpu, size_t(N)), gdl(*gpu, size_t(N));
  gdl.poison();
  cpu->router_z_loss(cl.p, N, 0.25f, closs.p, cdl.p);
  gpu->router_z_loss(gl.p, N, 0.25f, gloss.p, gdl.p);
  expect_close(gdl.get(), cdl.get(), 0, "z-loss dlse");
  // As the balance loss: fp64 sums in another order, ~1e-15 relative.
  EXPECT_NEAR(gloss.get()[0], closs.get()[0], 1e-12 * std::abs(closs.get()[0])) << "z-loss";
}

}  // namespace
}  // namespace origami::cuda
#endif
