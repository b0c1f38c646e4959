// CUDA GEMMs against the CPU reference: every transpose with padded leading dimensions and a
// batch of mixed shapes (one empty, one with k = 0), in fp32 and bf16, and the bf16 weight
// copies' invalidation when anything writes the weight.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

TEST_F(CudaOps, GemmAllTransposesLeadingDimsAndBatched) {
  for (GemmPrecision prec : {GemmPrecision::fp32, GemmPrecision::bf16}) {
    gpu->set_gemm_precision(prec);
    // fp32: sums of K = 129 products in cuBLAS's blocking order vs OpenBLAS's, ~1e-6 relative
    // norm; bf16: operands rounded to 8 mantissa bits (2e-3 relative each), fp32 accumulation.
    const double tol = prec == GemmPrecision::fp32 ? 1e-5 : 1e-2;
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int64_t M = 67, N = 45, K = 129, pad = 3;
        const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
        auto a = randn(size_t((ta ? K : M) * lda), ++seed), b = randn(size_t((tb ? N : K) * ldb), ++seed);
        auto c = randn(size_t(M * ldc), ++seed);
        Buf<float> ca(*cpu, a), cb(*cpu, b), cc(*cpu, c), ga(*gpu, a), gb(*gpu, b), gc(*gpu, c);
        GemmDesc d{bool(ta), bool(tb), M, N, K, 0.7f, nullptr, lda, nullptr, ldb, 0.3f, nullptr, ldc};
        GemmDesc dc = d, dg = d;
        dc.a = ca.p, dc.b = cb.p, dc.c = cc.p;
        dg.a = ga.p, dg.b = gb.p, dg.c = gc.p;
        cpu->gemm(dc);
        gpu->gemm(dg);
        expect_close(gc.get(), cc.get(), tol, "gemm");
      }
    // A batch of differently shaped GEMMs (one empty, one with k = 0 and beta = 0.5).
    std::vector<std::array<int64_t, 3>> shapes{{5, 7, 9}, {0, 4, 3}, {33, 17, 65}, {8, 8, 0}, {64, 32, 16}};
    std::vector<std::unique_ptr<Buf<float>>> keep;
    std::vector<GemmDesc> dc, dg;
    std::vector<Buf<float>*> outs_c, outs_g;
    for (auto [m, n, k] : shapes) {
      auto a = randn(size_t(std::max<int64_t>(m * k, 1)), ++seed), b = randn(size_t(std::max<int64_t>(k * n, 1)), ++seed);
      auto c = randn(size_t(std::max<int64_t>(m * n, 1)), ++seed);
      for (int side = 0; side < 2; ++side) {
        Backend& be = side ? static_cast<Backend&>(*gpu) : *cpu;
        keep.push_back(std::make_unique<Buf<float>>(be, a));
        keep.push_back(std::make_unique<Buf<float>>(be, b));
        keep.push_back(std::make_unique<Buf<float>>(be, c));
        const size_t i = keep.size();
        GemmDesc d{false, false, m, n, k, 1.f, keep[i - 3]->p, 0, keep[i - 2]->p, 0, k == 0 ? 0.5f : 1.f, keep[i - 1]->p, 0};
        (side ? dg : dc).push_back(d);
        (side ? outs_g : outs_c).push_back(keep[i - 1].get());
      }
    }
    cpu->gemm_batched(dc);
    gpu->gemm_batched(dg);
    for (size_t i = 0; i < outs_c.size(); ++i) expect_close(outs_g[i]->get(), outs_c[i]->get(), tol, "gemm_batched");
  }
}

// A weight operand's bf16 copy is reused across GEMMs and refreshed after anything writes the
// weight (the optimizer, a copy, a fill): results always follow the current fp32 values.
TEST_F(CudaOps, Bf16WeightCopiesFollowWritesToTheWeight) {
  gpu->set_gemm_precision(GemmPrecision::bf16);
  const int64_t M = 48, N = 40, K = 64;
  auto x = randn(size_t(M * K), ++seed), w = randn(size_t(N * K), ++seed);
  Buf<float> cx(*cpu, x), gx(*gpu, x), cw(*cpu, w), gw(*gpu, w), cy(*cpu, size_t(M * N)), gy(*gpu, size_t(M * N));
  auto run = [&] {
    GemmDesc d{false, true, M, N, K, 1.f, nullptr, K, nullptr, K, 0.f, nullptr, N, true};
    GemmDesc dc = d, dg = d;
    dc.a = cx.p, dc.b = cw.p, dc.c = cy.p;
    dg.a = gx.p, dg.b = gw.p, dg.c = gy.p;
    cpu->gemm(dc);
    gpu->gemm(dg);
    // bf16 operands (the cached weight copy and x), fp32 accumulation: as the bf16 GEMMs above.
    expect_close(gy.get(), cy.get(), 1e-2, "gemm with a cached weight");
  };
  run();
  const size_t conversions = gpu->weight_conversions();
  run();
  EXPECT_EQ(gpu->weight_conversions(), conversions) << "an unchanged weight is not converted again";
  auto g = randn(w.size(), ++seed);
  Buf<float> cg(*cpu, g), gg(*gpu, g), cm(*cpu, w.size()), gm(*gpu, w.size()), cv(*cpu, w.size()), gv(*gpu, w.size());
  cpu->adamw(cw.p, cg.p, cm.p, cv.p, N * K, 0.1f, 0.9f, 0.95f, 1e-8f, 0.f, 1);
  gpu->adamw(gw.p, gg.p, gm.p, gv.p, N * K, 0.1f, 0.9f, 0.95f, 1e-8f, 0.f, 1);
  run();  // after the optimizer
  auto w2 = randn(w.size(), ++seed);
  cw.set(w2), gw.set(w2);
  run();  // after a copy from the host
  cpu->fill(cw.p + 5, 0.5f, 7), gpu->fill(gw.p + 5, 0.5f, 7);
  run();  // after a fill of part of it
  EXPECT_EQ(gpu->weight_conversions(), conversions + 3);
}

}  // namespace
}  // namespace origami::cuda
#endif
