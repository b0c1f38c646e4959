// CUDA memory (zeroed allocations, statistics, device-memory recognition) and the elementwise
// ops and ordered fp64 reductions against the CPU reference.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

TEST_F(CudaOps, ElementwiseAndOrderedReductions) {
  const int64_t n = 100003;
  auto x = randn(size_t(n), ++seed), y = randn(size_t(n), ++seed);
  Buf<float> cx(*cpu, x), cy(*cpu, y), co(*cpu, size_t(n)), gx(*gpu, x), gy(*gpu, y), go(*gpu, size_t(n));
  go.poison();
  cpu->add(cx.p, cy.p, co.p, n), gpu->add(gx.p, gy.p, go.p, n);
  // One fp32 operation per element, the same on both sides (axpy's may be an FMA on the
  // device: half an ulp, 6e-8): 1e-7 relative norm for add, axpy and scale.
  expect_close(go.get(), co.get(), 1e-7, "add");
  cpu->axpy(0.3f, cx.p, cy.p, n), gpu->axpy(0.3f, gx.p, gy.p, n);
  expect_close(gy.get(), cy.get(), 1e-7, "axpy");
  cpu->scale(cy.p, -1.5f, n), gpu->scale(gy.p, -1.5f, n);
  expect_close(gy.get(), cy.get(), 1e-7, "scale");
  // fp64 sums of 1e5 values of O(1) in different orders: ~1e-16 * n apart; 1e-9 * n (1e-4)
  // still catches one dropped element.
  EXPECT_NEAR(gpu->sum(gx.p, n), cpu->sum(cx.p, n), 1e-9 * n);
  // A sum of positive terms in fp64: relative ordering error ~1e-16 * log(n); 1e-12.
  EXPECT_NEAR(gpu->sum_squares(gx.p, n) / cpu->sum_squares(cx.p, n), 1.0, 1e-12);
  EXPECT_EQ(gpu->sum_squares(gx.p, n), gpu->sum_squares(gx.p, n));  // run-to-run identical
  gpu->fill(go.p, 2.5f, n);
  for (float v : go.get()) ASSERT_EQ(v, 2.5f);
}

TEST_F(CudaOps, AllocatorZeroesAndCountsAndDeviceMemoryIsRecognised) {
  const size_t before = gpu->bytes_in_use();
  Buf<float> b(*gpu, size_t(1000));
  for (float x : b.get()) ASSERT_EQ(x, 0.f);
  EXPECT_EQ(gpu->bytes_in_use(), before + 4000);
  EXPECT_TRUE(gpu->is_device_memory(b.p));
  std::vector<float> host(4);
  EXPECT_FALSE(gpu->is_device_memory(host.data()));
}

}  // namespace
}  // namespace origami::cuda
#endif
