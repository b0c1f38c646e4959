// CUDA RMSNorm (forward, dx and the accumulated dw) and RoPE (forward, and backward inverting
// it) against the CPU reference.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

TEST_F(CudaOps, RmsnormForwardBackward) {
  const int64_t n = 300, dim = 96;
  auto x = randn(size_t(n * dim), ++seed), w = randn(size_t(dim), ++seed), dw0 = randn(size_t(dim), ++seed);
  auto dy = randn(size_t(n * dim), ++seed);
  Buf<float> cx(*cpu, x), gx(*gpu, x), cw(*cpu, w), gw(*gpu, w), cy(*cpu, x.size()), gy(*gpu, x.size());
  Buf<float> cr(*cpu, size_t(n)), gr(*gpu, size_t(n)), cdx(*cpu, x.size()), gdx(*gpu, x.size());
  Buf<float> cd(*cpu, dy), gd(*gpu, dy), cdw(*cpu, dw0), gdw(*gpu, dw0);
  gy.poison(), gr.poison(), gdx.poison();
  cpu->rmsnorm_forward(cx.p, cw.p, cy.p, cr.p, n, dim, 1e-5f);
  gpu->rmsnorm_forward(gx.p, gw.p, gy.p, gr.p, n, dim, 1e-5f);
  // fp64 sums of squares in another order, then the same fp32 products: an ulp or two (1.2e-7
  // each) per element.
  expect_close(gy.get(), cy.get(), 1e-6, "rmsnorm y");
  expect_close(gr.get(), cr.get(), 1e-6, "rmsnorm rstd");
  cpu->rmsnorm_backward(cd.p, cx.p, cw.p, cr.p, cdx.p, cdw.p, n, dim);
  gpu->rmsnorm_backward(gd.p, gx.p, gw.p, gr.p, gdx.p, gdw.p, n, dim);
  // dx: an fp64 dot, then fp32 ops the device may fuse (FMA); dw: fp32 sums of 300 rows in
  // chunks of 128 vs row order, ~sqrt(300) ulps: 1e-5 relative.
  expect_close(gdx.get(), cdx.get(), 1e-5, "rmsnorm dx");
  expect_close(gdw.get(), cdw.get(), 1e-5, "rmsnorm dw");
}

TEST_F(CudaOps, RopeForwardAndInverse) {
  const int64_t rows = 300, heads = 3, hd = 32;
  std::vector<int32_t> pos(rows);
  for (int64_t r = 0; r < rows; ++r) pos[r] = int32_t((r * 37) % 4096);
  auto q = randn(size_t(rows * heads * hd), ++seed);
  Buf<int32_t> cp(*cpu, pos), gp(*gpu, pos);
  Buf<float> cq(*cpu, q), gq(*gpu, q);
  cpu->rope_forward(cq.p, cp.p, rows, heads, hd, 10000.f), gpu->rope_forward(gq.p, gp.p, rows, heads, hd, 10000.f);
  // Same double angle (kernel_math); CUDA's pow/sincos are within 1-2 ulp of glibc's in double,
  // then fp32 cos/sin and an fp32 rotation (FMA on the device): ~1 fp32 ulp per element.
  expect_close(gq.get(), cq.get(), 1e-6, "rope_forward");
  cpu->rope_backward(cq.p, cp.p, rows, heads, hd, 10000.f), gpu->rope_backward(gq.p, gp.p, rows, heads, hd, 10000.f);
  // Rotating back: two fp32 rotations (and cos/sin roundings) from the input, ~2 ulps: 1e-6.
  expect_close(gq.get(), q, 1e-6, "rope_backward inverts forward");
}

}  // namespace
}  // namespace origami::cuda
#endif
