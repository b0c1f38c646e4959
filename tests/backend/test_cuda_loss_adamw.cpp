// CUDA softmax cross-entropy (forward, backward, the invalid-target contract) and AdamW
// against the CPU reference.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

TEST_F(CudaOps, CrossEntropyAndAdamw) {
  const int64_t N = 203, V = 5003;
  auto z = randn(size_t(N * V), ++seed, 3.f);
  std::vector<int32_t> tgt(N);
  std::mt19937 gen(++seed);
  for (auto& t : tgt) t = int32_t(gen() % V);
  tgt[3] = -1;
  Buf<float> cz(*cpu, z), gz(*gpu, z), cl(*cpu, size_t(N)), gl(*gpu, size_t(N)), cs(*cpu, size_t(N)), gs(*gpu, size_t(N));
  Buf<int32_t> ct(*cpu, tgt), gt(*gpu, tgt);
  gl.poison(), gs.poison();
  cpu->cross_entropy_forward(cz.p, ct.p, cl.p, cs.p, N, V), gpu->cross_entropy_forward(gz.p, gt.p, gl.p, gs.p, N, V);
  // fp64 sums of exp over V = 5003 in another order (block tree vs sequential), then fp32: lse
  // and losses within an ulp or two (1.2e-7 relative each).
  expect_close(gl.get(), cl.get(), 1e-6, "cross-entropy losses");
  expect_close(gs.get(), cs.get(), 1e-6, "cross-entropy lse");
  Buf<float> cd(*cpu, z.size()), gd(*gpu, z.size());
  gd.poison();
  cpu->cross_entropy_backward(cz.p, ct.p, cs.p, 0.01f, cd.p, N, V);
  gpu->cross_entropy_backward(gz.p, gt.p, gs.p, 0.01f, gd.p, N, V);
  // scale * expf(z - lse) in fp32: CUDA's expf within 2 ulp of glibc's: ~3e-7 relative norm.
  expect_close(gd.get(), cd.get(), 1e-6, "cross-entropy dlogits");
  // Targets are the caller's to check: the CUDA op does not wait to read a flag back. What
  // still holds for an invalid target: no error, no read outside the row (the row is treated as
  // ignored: zero loss and gradient), every other row unchanged.
  tgt[5] = int32_t(V);
  gt.set(tgt);
  gl.poison(), gd.poison();
  EXPECT_NO_THROW(gpu->cross_entropy_forward(gz.p, gt.p, gl.p, gs.p, N, V));
  EXPECT_NO_THROW(gpu->cross_entropy_backward(gz.p, gt.p, gs.p, 0.01f, gd.p, N, V));
  tgt[5] = -1;  // the reference, which would reject V, with the row ignored instead
  ct.set(tgt);
  cpu->cross_entropy_forward(cz.p, ct.p, cl.p, cs.p, N, V);
  cpu->cross_entropy_backward(cz.p, ct.p, cs.p, 0.01f, cd.p, N, V);
  // As above: the valid rows' arithmetic is unchanged.
  expect_close(gl.get(), cl.get(), 1e-6, "cross-entropy losses, an invalid target");
  expect_close(gd.get(), cd.get(), 1e-6, "cross-entropy dlogits, an invalid target");
  EXPECT_EQ(gl.get()[5], 0.f);

  const int64_t n = 70001;
  auto p = randn(size_t(n), ++seed), g = randn(size_t(n), ++seed), m = randn(size_t(n), ++seed, 0.1f);
  auto v = randn(size_t(n), ++seed, 0.1f);
  for (float& x : v) x = x * x;
  Buf<float> cpp(*cpu, p), gpp(*gpu, p), cg(*cpu, g), gg(*gpu, g), cm(*cpu, m), gm(*gpu, m), cv(*cpu, v), gv(*gpu, v);
  for (int64_t t = 1; t <= 3; ++t) {
    cpu->adamw(cpp.p, cg.p, cm.p, cv.p, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
    gpu->adamw(gpp.p, gg.p, gm.p, gv.p, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
  }
  // The same kernel_math::adamw_update; the device fuses the moment updates into FMAs, so each
  // step may differ by an ulp (1.2e-7 relative): three steps, 1e-6.
  expect_close(gpp.get(), cpp.get(), 1e-6, "adamw params");
  expect_close(gm.get(), cm.get(), 1e-6, "adamw m");
  expect_close(gv.get(), cv.get(), 1e-6, "adamw v");
}

}  // namespace
}  // namespace origami::cuda
#endif
