// CUDA SwiGLU forward and backward on a fused [rows, 2F] input against the CPU reference (both
// run kernel_math::swiglu / swiglu_grad).
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

TEST_F(CudaOps, SwigluForwardBackward) {
  const int64_t n = 300, F = 80;
  auto h = randn(size_t(n * 2 * F), ++seed), ds = randn(size_t(n * F), ++seed);
  Buf<float> ch(*cpu, h), gh(*gpu, h), cs(*cpu, size_t(n * F)), gs(*gpu, size_t(n * F));
  Buf<float> cds(*cpu, ds), gds(*gpu, ds), cdh(*cpu, h.size()), gdh(*gpu, h.size());
  gs.poison(), gdh.poison();
  cpu->swiglu_forward(ch.p, cs.p, n, F), gpu->swiglu_forward(gh.p, gs.p, n, F);
  // The same fp32 expression; CUDA's expf is within 2 ulp of glibc's and the device may fuse
  // products into FMAs: a few ulps (1.2e-7 each) per element.
  expect_close(gs.get(), cs.get(), 1e-6, "swiglu_forward");
  cpu->swiglu_backward(cds.p, ch.p, cdh.p, n, F), gpu->swiglu_backward(gds.p, gh.p, gdh.p, n, F);
  // As the forward, with a few more fp32 products: 1e-6.
  expect_close(gdh.get(), cdh.get(), 1e-6, "swiglu_backward");
}

}  // namespace
}  // namespace origami::cuda
#endif
