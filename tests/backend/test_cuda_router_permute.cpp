// The CUDA router (softmax, top-k, weights, lse and the backward) and the MoE permutation ops
// against the CPU reference: indices and counts exactly, with dropped slots.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "base/error.h"
#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

TEST_F(CudaOps, RouterAndPermutationMatchTheReferenceExactly) {
  for (bool renorm : {false, true}) {
    const int64_t N = 3001, E = 16, k = 2, dim = 40;
    auto logits = randn(size_t(N * E), ++seed, 2.f);
    Buf<float> cz(*cpu, logits), gz(*gpu, logits), cp(*cpu, size_t(N * E)), gp(*gpu, size_t(N * E));
    Buf<int32_t> ci(*cpu, size_t(N * k)), gi(*gpu, size_t(N * k));
    Buf<float> cw(*cpu, size_t(N * k)), gw(*gpu, size_t(N * k)), cl(*cpu, size_t(N)), gl(*gpu, size_t(N));
    gp.poison(), gi.poison(), gw.poison(), gl.poison();
    cpu->router_forward(cz.p, cp.p, ci.p, cw.p, cl.p, N, E, k, renorm);
    gpu->router_forward(gz.p, gp.p, gi.p, gw.p, gl.p, N, E, k, renorm);
    // The same kernel_math row functions; CUDA's exp/log in double are within an ulp or two of
    // glibc's, then rounded to fp32: probs, weights and lse equal or an fp32 ulp apart.
    expect_close(gp.get(), cp.get(), 1e-6, "router probs");
    ASSERT_EQ(gi.get(), ci.get()) << "router top-k indices";
    expect_close(gw.get(), cw.get(), 1e-6, "router weights");
    expect_close(gl.get(), cl.get(), 1e-6, "router lse");
    auto dw = randn(size_t(N * k), ++seed), dpr = randn(size_t(N * E), ++seed), dl = randn(size_t(N), ++seed);
    Buf<float> cdw(*cpu, dw), gdw(*gpu, dw), cdp(*cpu, dpr), gdp(*gpu, dpr), cdl(*cpu, dl), gdl(*gpu, dl);
    Buf<float> cdz(*cpu, size_t(N * E)), gdz(*gpu, size_t(N * E));
    gdz.poison();
    cpu->router_backward(cdw.p, cdp.p, cdl.p, cp.p, ci.p, cw.p, cdz.p, N, E, k, renorm);
    gpu->router_backward(gdw.p, gdp.p, gdl.p, gp.p, gi.p, gw.p, gdz.p, N, E, k, renorm);
    // fp64 inside (the device may fuse the fp64 sums into FMAs), one fp32 rounding: ~1 ulp.
    expect_close(gdz.get(), cdz.get(), 1e-6, "router dlogits");

    // Permutation, with some slots dropped (-1) as capacity mode does.
    auto idx = ci.get();
    for (size_t i = 0; i < idx.size(); i += 7) idx[i] = -1;
    ci.set(idx), gi.set(idx);
    Buf<int64_t> cc(*cpu, size_t(E)), gc(*gpu, size_t(E));
    Buf<int32_t> crow(*cpu, size_t(N * k)), grow(*gpu, size_t(N * k));
    grow.poison();
    cpu->moe_permute_indices(ci.p, N, k, E, cc.p, crow.p);
    gpu->moe_permute_indices(gi.p, N, k, E, gc.p, grow.p);
    ASSERT_EQ(gc.get(), cc.get()) << "expert counts";
    ASSERT_EQ(grow.get(), crow.get()) << "sorted rows (stable counting sort)";
    int64_t routed = 0;
    for (int64_t c : cc.get()) routed += c;
    auto x = randn(size_t(N * dim), ++seed), yperm = randn(size_t(routed * dim), ++seed), dout = randn(size_t(N * dim), ++seed);
    Buf<float> cx(*cpu, x), gx(*gpu, x), cpm(*cpu, size_t(routed * dim)), gpm(*gpu, size_t(routed * dim));
    gpm.poison();
    cpu->moe_permute(cx.p, crow.p, cpm.p, N, k, dim), gpu->moe_permute(gx.p, grow.p, gpm.p, N, k, dim);
    // Row copies: exact.
    expect_close(gpm.get(), cpm.get(), 0, "moe_permute");
    Buf<float> cdx(*cpu, x.size()), gdx(*gpu, x.size());
    gdx.poison();
    cpu->moe_permute_backward(cpm.p, crow.p, cdx.p, N, k, dim), gpu->moe_permute_backward(gpm.p, grow.p, gdx.p, N, k, dim);
    // fp32 sums of k = 2 rows in slot order on both (the CPU starts from 0 + row): exact or
    // half an ulp, 1e-7.
    expect_close(gdx.get(), cdx.get(), 1e-7, "moe_permute_backward");
    Buf<float> cy(*cpu, yperm), gy(*gpu, yperm), cu(*cpu, x.size()), gu(*gpu, x.size());
    gu.poison();
    cpu->moe_unpermute(cy.p, crow.p, cw.p, cu.p, N, k, dim), gpu->moe_unpermute(gy.p, grow.p, gw.p, gu.p, N, k, dim);
    // k = 2 weighted rows in slot order; the device fuses multiply-adds (FMA): ~1 ulp.
    expect_close(gu.get(), cu.get(), 1e-6, "moe_unpermute");
    Buf<float> cd(*cpu, dout), gd(*gpu, dout), cdy(*cpu, yperm.size()), gdy(*gpu, yperm.size());
    Buf<float> cdws(*cpu, size_t(N * k)), gdws(*gpu, size_t(N * k));
    gdws.poison();
    cpu->moe_unpermute_backward(cd.p, cy.p, crow.p, cw.p, cdy.p, cdws.p, N, k, dim);
    gpu->moe_unpermute_backward(gd.p, gy.p, grow.p, gw.p, gdy.p, gdws.p, N, k, dim);
    // dy: one fp32 product (exact match expected; 1e-6 as above); dweights: fp64 dots over
    // dim = 40 in another order (block tree), rounded to fp32: ~1 ulp.
    expect_close(gdy.get(), cdy.get(), 1e-6, "moe_unpermute_backward dy");
    expect_close(gdws.get(), cdws.get(), 1e-6, "moe_unpermute_backward dweights");
  }
}

TEST_F(CudaOps, PermutationRejectsAnOutOfRangeExpert) {
  std::vector<int32_t> idx{0, 1, 5, 2};
  Buf<int32_t> gi(*gpu, idx), grow(*gpu, idx.size());
  Buf<int64_t> gc(*gpu, size_t(4));
  EXPECT_THROW(gpu->moe_permute_indices(gi.p, 2, 2, 4, gc.p, grow.p), Error);
}

}  // namespace
}  // namespace origami::cuda
#endif
