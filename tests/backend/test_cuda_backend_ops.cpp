// Every CUDA backend op against the CPU reference on fresh random inputs: forward outputs and
// backward gradients, with GEMMs in exact fp32 (tolerance ~1e-5 relative) and again in bf16
// (~1e-2). Outputs are poisoned before each run so an unwritten element cannot pass. Skipped
// (GTEST_SKIP) where no GPU is visible; labelled gpu.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_device.h"
#include "base/error.h"

namespace origami::cuda {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

// A buffer of T on one backend, filled from / read back to host vectors.
template <typename T>
struct Buf {
  Backend* be;
  T* p;
  size_t n;
  Buf(Backend& b, size_t count) : be(&b), n(count) { p = static_cast<T*>(b.allocate(sizeof(T) * std::max<size_t>(n, 1))); }
  Buf(Backend& b, const std::vector<T>& host) : Buf(b, host.size()) { set(host); }
  ~Buf() { be->deallocate(p); }
  Buf(const Buf&) = delete;
  void set(const std::vector<T>& h) { be->copy_from_host(p, h.data(), sizeof(T) * n); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    be->copy_to_host(h.data(), p, sizeof(T) * n);
    return h;
  }
  void poison() {  // NaN bit pattern for floats, -7 for ints
    std::vector<T> h(n);
    if constexpr (std::is_same_v<T, float>) std::fill(h.begin(), h.end(), std::nanf(""));
    else std::fill(h.begin(), h.end(), T(-7));
    set(h);
  }
};

// ||a - b|| / ||b|| <= tol, and no NaN anywhere.
void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                  const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << ": element " << i << " is NaN (unwritten?)";
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), tol) << what;
}

// T keys; Tq > 0: the offset op, Tq queries at positions q_start.. (context parallelism).
struct AttnShape {
  int64_t B, T, nh, nkv, hd;
  int64_t Tq = 0, q_start = 0;
};
struct AttnTolerance {
  double out, lse, grad;
};

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (device_count() == 0) GTEST_SKIP() << "no CUDA device";
    cpu = make_cpu_backend();
    gpu = std::make_unique<CudaBackend>(0, GemmPrecision::fp32);
  }
  void check_attention(AttnShape s, AttnTolerance tol, bool rerun);
  std::unique_ptr<Backend> cpu;
  std::unique_ptr<CudaBackend> gpu;
  uint32_t seed = 1234;
};

TEST_F(CudaOps, GemmAllTransposesLeadingDimsAndBatched) {
  for (GemmPrecision prec : {GemmPrecision::fp32, GemmPrecision::bf16}) {
    gpu->set_gemm_precision(prec);
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

TEST_F(CudaOps, ElementwiseAndOrderedReductions) {
  const int64_t n = 100003;
  auto x = randn(size_t(n), ++seed), y = randn(size_t(n), ++seed);
  Buf<float> cx(*cpu, x), cy(*cpu, y), co(*cpu, size_t(n)), gx(*gpu, x), gy(*gpu, y), go(*gpu, size_t(n));
  go.poison();
  cpu->add(cx.p, cy.p, co.p, n), gpu->add(gx.p, gy.p, go.p, n);
  expect_close(go.get(), co.get(), 1e-7, "add");
  cpu->axpy(0.3f, cx.p, cy.p, n), gpu->axpy(0.3f, gx.p, gy.p, n);
  expect_close(gy.get(), cy.get(), 1e-7, "axpy");
  cpu->scale(cy.p, -1.5f, n), gpu->scale(gy.p, -1.5f, n);
  expect_close(gy.get(), cy.get(), 1e-7, "scale");
  EXPECT_NEAR(gpu->sum(gx.p, n), cpu->sum(cx.p, n), 1e-9 * n);
  EXPECT_NEAR(gpu->sum_squares(gx.p, n) / cpu->sum_squares(cx.p, n), 1.0, 1e-12);
  EXPECT_EQ(gpu->sum_squares(gx.p, n), gpu->sum_squares(gx.p, n));  // run-to-run identical
  gpu->fill(go.p, 2.5f, n);
  for (float v : go.get()) ASSERT_EQ(v, 2.5f);
}

TEST_F(CudaOps, EmbeddingRmsnormRopeSwiglu) {
  const int64_t n = 300, dim = 96, vocab = 50, heads = 3, hd = 32, F = 80;
  std::vector<int32_t> ids(n);
  std::mt19937 gen(++seed);
  for (auto& i : ids) i = int32_t(gen() % vocab);
  ids[7] = -1;  // padding row
  auto table = randn(size_t(vocab * dim), ++seed), dout = randn(size_t(n * dim), ++seed);
  Buf<int32_t> cid(*cpu, ids), gid(*gpu, ids);
  Buf<float> ct(*cpu, table), gt(*gpu, table), co(*cpu, size_t(n * dim)), go(*gpu, size_t(n * dim));
  Buf<float> cd(*cpu, dout), gd(*gpu, dout), cdt(*cpu, table), gdt(*gpu, table);
  go.poison();
  cpu->embedding_forward(cid.p, ct.p, co.p, n, dim), gpu->embedding_forward(gid.p, gt.p, go.p, n, dim);
  expect_close(go.get(), co.get(), 0, "embedding_forward");
  cpu->embedding_backward(cd.p, cid.p, cdt.p, n, dim), gpu->embedding_backward(gd.p, gid.p, gdt.p, n, dim);
  expect_close(gdt.get(), cdt.get(), 1e-6, "embedding_backward (accumulates)");

  auto x = randn(size_t(n * dim), ++seed), w = randn(size_t(dim), ++seed), dw0 = randn(size_t(dim), ++seed);
  Buf<float> cx(*cpu, x), gx(*gpu, x), cw(*cpu, w), gw(*gpu, w), cy(*cpu, x.size()), gy(*gpu, x.size());
  Buf<float> cr(*cpu, size_t(n)), gr(*gpu, size_t(n)), cdx(*cpu, x.size()), gdx(*gpu, x.size());
  Buf<float> cdw(*cpu, dw0), gdw(*gpu, dw0);
  gy.poison(), gr.poison(), gdx.poison();
  cpu->rmsnorm_forward(cx.p, cw.p, cy.p, cr.p, n, dim, 1e-5f);
  gpu->rmsnorm_forward(gx.p, gw.p, gy.p, gr.p, n, dim, 1e-5f);
  expect_close(gy.get(), cy.get(), 1e-6, "rmsnorm y");
  expect_close(gr.get(), cr.get(), 1e-6, "rmsnorm rstd");
  cpu->rmsnorm_backward(cd.p, cx.p, cw.p, cr.p, cdx.p, cdw.p, n, dim);
  gpu->rmsnorm_backward(gd.p, gx.p, gw.p, gr.p, gdx.p, gdw.p, n, dim);
  expect_close(gdx.get(), cdx.get(), 1e-5, "rmsnorm dx");
  expect_close(gdw.get(), cdw.get(), 1e-5, "rmsnorm dw");

  const int64_t rows = n;
  std::vector<int32_t> pos(rows);
  for (int64_t r = 0; r < rows; ++r) pos[r] = int32_t((r * 37) % 4096);
  auto q = randn(size_t(rows * heads * hd), ++seed);
  Buf<int32_t> cp(*cpu, pos), gp(*gpu, pos);
  Buf<float> cq(*cpu, q), gq(*gpu, q);
  cpu->rope_forward(cq.p, cp.p, rows, heads, hd, 10000.f), gpu->rope_forward(gq.p, gp.p, rows, heads, hd, 10000.f);
  expect_close(gq.get(), cq.get(), 1e-6, "rope_forward");
  cpu->rope_backward(cq.p, cp.p, rows, heads, hd, 10000.f), gpu->rope_backward(gq.p, gp.p, rows, heads, hd, 10000.f);
  expect_close(gq.get(), q, 1e-6, "rope_backward inverts forward");

  auto h = randn(size_t(n * 2 * F), ++seed), ds = randn(size_t(n * F), ++seed);
  Buf<float> ch(*cpu, h), gh(*gpu, h), cs(*cpu, size_t(n * F)), gs(*gpu, size_t(n * F));
  Buf<float> cds(*cpu, ds), gds(*gpu, ds), cdh(*cpu, h.size()), gdh(*gpu, h.size());
  gs.poison(), gdh.poison();
  cpu->swiglu_forward(ch.p, cs.p, n, F), gpu->swiglu_forward(gh.p, gs.p, n, F);
  expect_close(gs.get(), cs.get(), 1e-6, "swiglu_forward");
  cpu->swiglu_backward(cds.p, ch.p, cdh.p, n, F), gpu->swiglu_backward(gds.p, gh.p, gdh.p, n, F);
  expect_close(gdh.get(), cdh.get(), 1e-6, "swiglu_backward");
}

// Forward and backward of one shape on both backends; with `rerun`, a second backward on the GPU
// must reproduce the first bitwise.
void CudaOps::check_attention(AttnShape s, AttnTolerance tol, bool rerun) {
  const bool offset = s.Tq > 0;
  const int64_t Tq = offset ? s.Tq : s.T;
  const size_t nq = size_t(s.B * Tq * s.nh * s.hd), nk = size_t(s.B * s.T * s.nkv * s.hd);
  const size_t nl = size_t(s.B * s.nh * Tq);
  auto q = randn(nq, ++seed), k = randn(nk, ++seed), v = randn(nk, ++seed), dout = randn(nq, ++seed);
  Buf<float> cq(*cpu, q), ck(*cpu, k), cv(*cpu, v), gq(*gpu, q), gk(*gpu, k), gv(*gpu, v);
  Buf<float> co(*cpu, nq), go(*gpu, nq), cl(*cpu, nl), gl(*gpu, nl);
  go.poison(), gl.poison();
  auto forward = [&](Backend& be, Buf<float>& q_, Buf<float>& k_, Buf<float>& v_, Buf<float>& o_,
                     Buf<float>& l_) {
    if (offset)
      be.attention_forward_offset(q_.p, k_.p, v_.p, o_.p, l_.p, s.B, Tq, s.T, s.q_start, s.nh,
                                  s.nkv, s.hd);
    else
      be.attention_forward(q_.p, k_.p, v_.p, o_.p, l_.p, s.B, s.T, s.nh, s.nkv, s.hd);
  };
  forward(*cpu, cq, ck, cv, co, cl);
  forward(*gpu, gq, gk, gv, go, gl);
  expect_close(go.get(), co.get(), tol.out, "attention out");
  expect_close(gl.get(), cl.get(), tol.lse, "attention lse");
  Buf<float> cd(*cpu, dout), gd(*gpu, dout), cdq(*cpu, nq), gdq(*gpu, nq), cdk(*cpu, nk), gdk(*gpu, nk);
  Buf<float> cdv(*cpu, nk), gdv(*gpu, nk);
  gdq.poison(), gdk.poison(), gdv.poison();
  auto backward = [&](Backend& be, Buf<float>& d_, Buf<float>& q_, Buf<float>& k_, Buf<float>& v_,
                      Buf<float>& o_, Buf<float>& l_, Buf<float>& dq_, Buf<float>& dk_,
                      Buf<float>& dv_) {
    if (offset)
      be.attention_backward_offset(d_.p, q_.p, k_.p, v_.p, o_.p, l_.p, dq_.p, dk_.p, dv_.p, s.B, Tq,
                                   s.T, s.q_start, s.nh, s.nkv, s.hd);
    else
      be.attention_backward(d_.p, q_.p, k_.p, v_.p, o_.p, l_.p, dq_.p, dk_.p, dv_.p, s.B, s.T, s.nh,
                            s.nkv, s.hd);
  };
  auto gpu_backward = [&] { backward(*gpu, gd, gq, gk, gv, go, gl, gdq, gdk, gdv); };
  backward(*cpu, cd, cq, ck, cv, co, cl, cdq, cdk, cdv);
  gpu_backward();
  expect_close(gdq.get(), cdq.get(), tol.grad, "attention dq");
  expect_close(gdk.get(), cdk.get(), tol.grad, "attention dk");
  expect_close(gdv.get(), cdv.get(), tol.grad, "attention dv");
  if (rerun) {
    const std::vector<float> first = gdk.get();
    gdk.poison();
    gpu_backward();
    EXPECT_EQ(gdk.get(), first) << "run-to-run identical";
  }
}

TEST_F(CudaOps, AttentionForwardBackwardGqaManyShapes) {
  for (AttnShape s : {AttnShape{2, 37, 4, 2, 8}, AttnShape{1, 130, 4, 4, 64},
                      AttnShape{2, 77, 8, 2, 128}, AttnShape{1, 64, 2, 1, 96}})
    check_attention(s, {1e-5, 1e-6, 1e-5}, false);
}

// Below fp32 GEMM precision, head sizes 32/64/96/128 take the tensor-core kernels (bf16
// operands): they must match the fp32 reference to bf16 accuracy, on ragged sequence lengths.
TEST_F(CudaOps, AttentionOnTensorCoresMatchesToBf16Accuracy) {
  gpu->set_gemm_precision(GemmPrecision::bf16);
  for (AttnShape s : {AttnShape{2, 37, 4, 2, 64}, AttnShape{1, 200, 4, 4, 128},
                      AttnShape{2, 129, 8, 2, 32}, AttnShape{1, 64, 2, 1, 96}})
    check_attention(s, {2e-2, 1e-2, 3e-2}, true);
}

// Context parallelism's offset op, native on the GPU: a chunk of Tq queries at q_start against
// all T keys, ragged and unaligned to every tile size, including the first and last chunks and
// keys past the last query (zero dk/dv, which must still be written over the poison).
TEST_F(CudaOps, OffsetAttentionMatchesTheReference) {
  const AttnShape shapes[] = {{2, 64, 4, 2, 8, 16, 0},     {2, 64, 4, 2, 8, 16, 48},
                              {1, 150, 4, 4, 64, 37, 41},  {2, 200, 8, 2, 128, 50, 100},
                              {1, 96, 2, 1, 96, 24, 72},   {2, 129, 8, 2, 32, 33, 5}};
  for (AttnShape s : shapes) check_attention(s, {1e-5, 1e-6, 1e-5}, false);
  gpu->set_gemm_precision(GemmPrecision::bf16);  // the tensor-core kernels
  for (AttnShape s : shapes) check_attention(s, {2e-2, 1e-2, 3e-2}, true);
}

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
    expect_close(gpm.get(), cpm.get(), 0, "moe_permute");
    Buf<float> cdx(*cpu, x.size()), gdx(*gpu, x.size());
    gdx.poison();
    cpu->moe_permute_backward(cpm.p, crow.p, cdx.p, N, k, dim), gpu->moe_permute_backward(gpm.p, grow.p, gdx.p, N, k, dim);
    expect_close(gdx.get(), cdx.get(), 1e-7, "moe_permute_backward");
    Buf<float> cy(*cpu, yperm), gy(*gpu, yperm), cu(*cpu, x.size()), gu(*gpu, x.size());
    gu.poison();
    cpu->moe_unpermute(cy.p, crow.p, cw.p, cu.p, N, k, dim), gpu->moe_unpermute(gy.p, grow.p, gw.p, gu.p, N, k, dim);
    expect_close(gu.get(), cu.get(), 1e-6, "moe_unpermute");
    Buf<float> cd(*cpu, dout), gd(*gpu, dout), cdy(*cpu, yperm.size()), gdy(*gpu, yperm.size());
    Buf<float> cdws(*cpu, size_t(N * k)), gdws(*gpu, size_t(N * k));
    gdws.poison();
    cpu->moe_unpermute_backward(cd.p, cy.p, crow.p, cw.p, cdy.p, cdws.p, N, k, dim);
    gpu->moe_unpermute_backward(gd.p, gy.p, grow.p, gw.p, gdy.p, gdws.p, N, k, dim);
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
      // fp64 sums of N*E terms in another order: ~1e-15 relative.
      EXPECT_NEAR(gloss.get()[0], closs.get()[0], 1e-12 * std::abs(closs.get()[0]))
          << "balance loss (accumulated)";
      const double value = closs.get()[0];
      gpu->balance_loss(gp.p, gc.p, grow, N, E, B, share, slots, 0.3, 7.0, 0.5f, gloss.p, gdp.p);
      cpu->balance_loss(cp.p, cc.p, crow, N, E, B, share, slots, 0.3, 7.0, 0.5f, closs.p, cdp.p);
      EXPECT_GT(closs.get()[0], value) << "a second call adds to the loss";
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
  expect_close(gl.get(), cl.get(), 1e-6, "cross-entropy losses");
  expect_close(gs.get(), cs.get(), 1e-6, "cross-entropy lse");
  Buf<float> cd(*cpu, z.size()), gd(*gpu, z.size());
  gd.poison();
  cpu->cross_entropy_backward(cz.p, ct.p, cs.p, 0.01f, cd.p, N, V);
  gpu->cross_entropy_backward(gz.p, gt.p, gs.p, 0.01f, gd.p, N, V);
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
  expect_close(gpp.get(), cpp.get(), 1e-6, "adamw params");
  expect_close(gm.get(), cm.get(), 1e-6, "adamw m");
  expect_close(gv.get(), cv.get(), 1e-6, "adamw v");
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
