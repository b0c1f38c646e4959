// The bf16 reference (training.precision bf16 on the cpu: Bf16StorageBackend), op by op.
// Two properties per op:
//  1. Where it rounds: given the same (bf16) inputs, every output stored in a bf16 buffer is
//     exactly the fp32 op's output rounded to nearest-even bf16, and every output stored in an
//     fp32 buffer (statistics, router values, losses, parameter gradients) is the fp32 op's,
//     bit for bit. So a device kernel that accumulates in fp32 and rounds once on the store
//     matches the reference to the last bit, up to its own summation order.
//  2. How far from fp32 training: on fp32 inputs, the bf16 path (inputs stored as bf16, output
//     stored as bf16) stays within a bound derived from u = 2^-8, bf16's unit roundoff (8 bits
//     of significand, round to nearest: |bf16(x) - x| <= u |x|); each test says why its bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "backend/bf16_storage_backend.h"
#include "backend_test_util.h"
#include "base/error.h"
#include "tensor/dtype.h"

namespace origami {
namespace {

using namespace origami::testing;
constexpr double u = 1.0 / 256;  // bf16 unit roundoff

// Buffers of one backend, freed at scope exit; `in` stores host values at a type (a bf16 store
// rounds them), `out` is a zeroed output buffer of a type.
struct Buffers {
  Backend& be;
  std::vector<void*> owned;
  explicit Buffers(Backend& b) : be(b) {}
  ~Buffers() {
    for (void* p : owned) be.deallocate(p);
  }
  float* out(size_t n, DType t) {
    void* p = be.allocate_as(std::max<size_t>(n, 1) * sizeof(float), t);
    owned.push_back(p);
    return static_cast<float*>(p);
  }
  float* in(const std::vector<float>& host, DType t) {
    float* p = out(host.size(), t);
    be.copy_from_host(p, host.data(), host.size() * sizeof(float));
    return p;
  }
  std::vector<float> get(const float* p, size_t n) {
    std::vector<float> h(n);
    be.copy_to_host(h.data(), p, n * sizeof(float));
    return h;
  }
};

std::vector<float> rounded(std::vector<float> v) {
  bf16_round_inplace(v.data(), int64_t(v.size()));
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Property 1 for one output: `got` (bf16 backend) against the fp32 op's `ref` on the same inputs.
void expect_stored_as(const std::vector<float>& got, const std::vector<float>& ref, DType t,
                      const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int bad = 0, moved = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const float want = t == DType::bf16 ? bf16_round(ref[i]) : ref[i];
    moved += !same_bits(ref[i], want);
    if (!same_bits(got[i], want) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: " << got[i] << ", want " << want << " ("
                    << dtype_name(t) << " store of " << ref[i] << ")";
  }
  EXPECT_EQ(bad, 0) << what;
  // A bf16 output whose fp32 values were all bf16 already would not show the rounding.
  if (t == DType::bf16) EXPECT_GT(moved, 0) << what << ": nothing to round; the test is vacuous";
}

// Property 2: |got - ref| <= bound[i] elementwise.
void expect_within(const std::vector<float>& got, const std::vector<float>& ref,
                   const std::vector<double>& bound, const char* what) {
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (std::abs(double(got[i]) - double(ref[i])) > bound[i] && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: bf16 " << got[i] << " vs fp32 " << ref[i]
                    << " (bound " << bound[i] << ")";
  EXPECT_EQ(bad, 0) << what;
}

struct Pair {
  std::unique_ptr<Backend> f32 = make_backend("cpu", 0, "fp32");
  std::unique_ptr<Backend> b16 = make_backend("cpu", 0, "bf16");
};

TEST(Bf16Round, NearestEvenAndSpecials) {
  EXPECT_EQ(bf16_round(1.0f), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1); just above rounds up.
  EXPECT_EQ(bf16_round(1.0f + std::ldexp(1.f, -8)), 1.0f);
  EXPECT_EQ(bf16_round(1.0f + std::ldexp(1.f, -8) + std::ldexp(1.f, -20)), 1.0f + std::ldexp(1.f, -7));
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
  EXPECT_EQ(bf16_round(1.0f + 3 * std::ldexp(1.f, -8)), 1.0f + std::ldexp(1.f, -6));
  EXPECT_EQ(bf16_round(-2.5f), -2.5f);
  EXPECT_TRUE(std::isinf(bf16_round(INFINITY)));
  EXPECT_TRUE(std::isnan(bf16_round(NAN)));
  EXPECT_TRUE(std::isinf(bf16_round(3.4e38f)));  // past bf16's largest finite (3.39e38)
  EXPECT_EQ(bf16_bits(1.0f), 0x3f80);
  for (float x : random_vector(1000, 7, -1e3f, 1e3f)) {
    const float r = bf16_round(x);
    EXPECT_LE(std::abs(r - x), u * std::abs(x)) << x;
    EXPECT_EQ(bf16_round(r), r);  // idempotent: a bf16 value is stored as itself
  }
}

TEST(Bf16Storage, BuffersAreTypedAndCountedAtTheirStorageSize) {
  Pair p;
  const size_t before = p.b16->bytes_in_use();
  Buffers b(*p.b16);
  float* x = b.out(1000, DType::bf16);
  float* y = b.out(1000, DType::f32);
  EXPECT_EQ(p.b16->stored_dtype(x), DType::bf16);
  EXPECT_EQ(p.b16->stored_dtype(x + 999), DType::bf16);
  EXPECT_EQ(p.b16->stored_dtype(y), DType::f32);
  EXPECT_EQ(p.b16->bytes_in_use() - before, 1000 * 2 + 1000 * 4);
  // The fp32 backend ignores the type: everything is fp32.
  Buffers c(*p.f32);
  EXPECT_EQ(p.f32->stored_dtype(c.out(10, DType::bf16)), DType::f32);
  // convert() is the counted conversion; a bf16 -> bf16 copy converts nothing.
  const auto v = random_vector(1000, 1);
  float* src = b.in(v, DType::f32);
  p.b16->convert(src, x, 1000);
  EXPECT_EQ(p.b16->converted_elements(), 1000);
  EXPECT_EQ(b.get(x, 1000), rounded(v));
  float* x2 = b.out(1000, DType::bf16);
  p.b16->copy(x2, x, 1000 * sizeof(float));
  EXPECT_EQ(p.b16->converted_elements(), 1000);
}

TEST(Bf16Storage, GemmRoundsTheStoreOnly) {
  Pair p;
  const int64_t M = 9, N = 11, K = 37;
  const auto A = random_vector(M * K, 1), B = random_vector(N * K, 2);
  // Property 1: bf16 inputs; C stored bf16 (an activation) and fp32 (router logits, a weight
  // gradient accumulated with beta = 1 into an fp32 main gradient).
  for (DType ct : {DType::bf16, DType::f32}) {
    Buffers f(*p.f32), h(*p.b16);
    const auto Ar = rounded(A), Br = rounded(B), C0 = random_vector(M * N, 3);
    GemmDesc g{false, true, M, N, K, 1.f, nullptr, K, nullptr, K, 1.f, nullptr, N};
    GemmDesc gf = g, gh = g;
    gf.a = f.in(Ar, DType::f32), gf.b = f.in(Br, DType::f32), gf.c = f.in(C0, DType::f32);
    gh.a = h.in(Ar, DType::bf16), gh.b = h.in(Br, DType::bf16), gh.c = h.in(C0, DType::f32);
    if (ct == DType::bf16) {  // an activation buffer holds bf16 values before the op too
      gf.c = f.in(rounded(C0), DType::f32);
      gh.c = h.in(C0, DType::bf16);
    }
    p.f32->gemm(gf);
    p.b16->gemm(gh);
    expect_stored_as(h.get(gh.c, M * N), f.get(gf.c, M * N), ct, "gemm C");
  }
  // Property 2: fp32 inputs. Each product a*b carries <= 2u relative error from rounding a and
  // b, so |dC| <= 2u (|A||B|) + u |C| (the store), plus fp32 noise.
  Buffers f(*p.f32), h(*p.b16);
  GemmDesc gf{false, true, M, N, K, 1.f, f.in(A, DType::f32), K, f.in(B, DType::f32), K, 0.f,
              f.out(M * N, DType::f32), N};
  GemmDesc gh{false, true, M, N, K, 1.f, h.in(A, DType::bf16), K, h.in(B, DType::bf16), K, 0.f,
              h.out(M * N, DType::bf16), N};
  p.f32->gemm(gf);
  p.b16->gemm(gh);
  const auto c = f.get(gf.c, M * N);
  std::vector<double> bound(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double abs_ab = 0;
      for (int64_t k = 0; k < K; ++k) abs_ab += std::abs(A[i * K + k] * B[j * K + k]);
      bound[i * N + j] = 2 * u * abs_ab + u * std::abs(c[i * N + j]) + 1e-5;
    }
  expect_within(h.get(gh.c, M * N), c, bound, "gemm C vs fp32");
}

TEST(Bf16Storage, ElementwiseOpsRoundTheirStore) {
  Pair p;
  const int64_t n = 500;
  const auto a = rounded(random_vector(n, 1)), b = rounded(random_vector(n, 2));
  // Each op on the same bf16 inputs in both backends (the in-place ones on a fresh copy).
  Buffers f(*p.f32), h(*p.b16);
  float *fa = f.in(a, DType::f32), *fb = f.in(b, DType::f32), *fo = f.out(n, DType::f32);
  float *ha = h.in(a, DType::bf16), *hb = h.in(b, DType::bf16), *ho = h.out(n, DType::bf16);
  p.f32->add(fa, fb, fo, n);
  p.b16->add(ha, hb, ho, n);
  expect_stored_as(h.get(ho, n), f.get(fo, n), DType::bf16, "add");
  float *fy = f.in(b, DType::f32), *hy = h.in(b, DType::bf16);
  p.f32->axpy(0.3f, fa, fy, n);
  p.b16->axpy(0.3f, ha, hy, n);
  expect_stored_as(h.get(hy, n), f.get(fy, n), DType::bf16, "axpy");
  float *fs = f.in(a, DType::f32), *hs = h.in(a, DType::bf16);
  p.f32->scale(fs, 1.7f, n);
  p.b16->scale(hs, 1.7f, n);
  expect_stored_as(h.get(hs, n), f.get(fs, n), DType::bf16, "scale");
  float *ff = f.out(n, DType::f32), *hf = h.out(n, DType::bf16);
  p.f32->fill(ff, 0.1f, n);
  p.b16->fill(hf, 0.1f, n);
  expect_stored_as(h.get(hf, n), f.get(ff, n), DType::bf16, "fill");
}

TEST(Bf16Storage, NormRopeSwigluEmbedding) {
  Pair p;
  const int64_t rows = 12, dim = 32, heads = 2, hd = 16, F = 24, V = 40;
  const auto x = rounded(random_vector(rows * dim, 1, -2.f, 2.f));
  const auto w = rounded(random_vector(dim, 2, 0.5f, 1.5f));
  const auto dy = rounded(random_vector(rows * dim, 3));
  std::vector<int32_t> pos(rows);
  for (int64_t r = 0; r < rows; ++r) pos[r] = int32_t(r * 7);
  Buffers f(*p.f32), h(*p.b16);
  // RMSNorm: y is an activation (bf16), rstd a statistic (fp32); backward: dx bf16, dw fp32.
  float *fy = f.out(rows * dim, DType::f32), *fr = f.out(rows, DType::f32);
  float *hy = h.out(rows * dim, DType::bf16), *hr = h.out(rows, DType::f32);
  p.f32->rmsnorm_forward(f.in(x, DType::f32), f.in(w, DType::f32), fy, fr, rows, dim, 1e-5f);
  p.b16->rmsnorm_forward(h.in(x, DType::bf16), h.in(w, DType::bf16), hy, hr, rows, dim, 1e-5f);
  expect_stored_as(h.get(hy, rows * dim), f.get(fy, rows * dim), DType::bf16, "rmsnorm y");
  expect_stored_as(h.get(hr, rows), f.get(fr, rows), DType::f32, "rmsnorm rstd");
  float *fdx = f.out(rows * dim, DType::f32), *fdw = f.out(dim, DType::f32);
  float *hdx = h.out(rows * dim, DType::bf16), *hdw = h.out(dim, DType::f32);
  p.f32->rmsnorm_backward(f.in(dy, DType::f32), f.in(x, DType::f32), f.in(w, DType::f32), fr, fdx,
                          fdw, rows, dim);
  p.b16->rmsnorm_backward(h.in(dy, DType::bf16), h.in(x, DType::bf16), h.in(w, DType::bf16), hr,
                          hdx, hdw, rows, dim);
  expect_stored_as(h.get(hdx, rows * dim), f.get(fdx, rows * dim), DType::bf16, "rmsnorm dx");
  expect_stored_as(h.get(hdw, dim), f.get(fdw, dim), DType::f32, "rmsnorm dw");
  // RoPE in place on q (bf16): the rotated values are stored rounded.
  float *fq = f.in(x, DType::f32), *hq = h.in(x, DType::bf16);
  p.f32->rope_forward(fq, pos.data(), rows, heads, hd, 10000.f);
  p.b16->rope_forward(hq, pos.data(), rows, heads, hd, 10000.f);
  expect_stored_as(h.get(hq, rows * dim), f.get(fq, rows * dim), DType::bf16, "rope");
  // SwiGLU.
  const auto hh = rounded(random_vector(rows * 2 * F, 4, -3.f, 3.f));
  const auto dout = rounded(random_vector(rows * F, 5));
  float *fo = f.out(rows * F, DType::f32), *ho = h.out(rows * F, DType::bf16);
  p.f32->swiglu_forward(f.in(hh, DType::f32), fo, rows, F);
  p.b16->swiglu_forward(h.in(hh, DType::bf16), ho, rows, F);
  expect_stored_as(h.get(ho, rows * F), f.get(fo, rows * F), DType::bf16, "swiglu out");
  float *fdh = f.out(rows * 2 * F, DType::f32), *hdh = h.out(rows * 2 * F, DType::bf16);
  p.f32->swiglu_backward(f.in(dout, DType::f32), f.in(hh, DType::f32), fdh, rows, F);
  p.b16->swiglu_backward(h.in(dout, DType::bf16), h.in(hh, DType::bf16), hdh, rows, F);
  expect_stored_as(h.get(hdh, rows * 2 * F), f.get(fdh, rows * 2 * F), DType::bf16, "swiglu dh");
  // Embedding: a gather of bf16 table rows (the compute copy) is exact; its gradient is the
  // fp32 main gradient, accumulated without rounding.
  const auto table = random_vector(V * dim, 6);
  std::vector<int32_t> ids(rows);
  for (int64_t r = 0; r < rows; ++r) ids[r] = int32_t((r * 13) % V);
  float* he = h.out(rows * dim, DType::bf16);
  p.b16->embedding_forward(ids.data(), h.in(table, DType::bf16), he, rows, dim);
  const auto e = h.get(he, rows * dim);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < dim; ++j)
      ASSERT_EQ(e[r * dim + j], bf16_round(table[ids[r] * dim + j]));
  float *fdt = f.out(V * dim, DType::f32), *hdt = h.out(V * dim, DType::f32);
  p.f32->embedding_backward(f.in(dy, DType::f32), ids.data(), fdt, rows, dim);
  p.b16->embedding_backward(h.in(dy, DType::bf16), ids.data(), hdt, rows, dim);
  expect_stored_as(h.get(hdt, V * dim), f.get(fdt, V * dim), DType::f32, "embedding dtable");

  // Property 2 for RMSNorm: y = x w / rms(x). Rounding x, w: <= 2u relative on each product,
  // and rms(x) moves by <= u relative; the store adds u: |dy| <= 4u |y| (+ fp32 noise).
  const auto xr = random_vector(rows * dim, 7, -2.f, 2.f), wr = random_vector(dim, 8, 0.5f, 1.5f);
  float *fy2 = f.out(rows * dim, DType::f32), *hy2 = h.out(rows * dim, DType::bf16);
  p.f32->rmsnorm_forward(f.in(xr, DType::f32), f.in(wr, DType::f32), fy2, fr, rows, dim, 1e-5f);
  p.b16->rmsnorm_forward(h.in(xr, DType::bf16), h.in(wr, DType::bf16), hy2, hr, rows, dim, 1e-5f);
  const auto y32 = f.get(fy2, rows * dim);
  std::vector<double> bound(y32.size());
  for (size_t i = 0; i < y32.size(); ++i) bound[i] = 4 * u * std::abs(y32[i]) + 1e-6;
  expect_within(h.get(hy2, rows * dim), y32, bound, "rmsnorm y vs fp32");
}

TEST(Bf16Storage, AttentionStoresOutAndGradientsBf16AndLseFp32) {
  Pair p;
  const int64_t B = 2, T = 9, nh = 4, nkv = 2, hd = 8;
  const auto q = rounded(random_vector(B * T * nh * hd, 1)),
             k = rounded(random_vector(B * T * nkv * hd, 2)),
             v = rounded(random_vector(B * T * nkv * hd, 3)),
             dout = rounded(random_vector(B * T * nh * hd, 4));
  Buffers f(*p.f32), h(*p.b16);
  const int64_t nq = B * T * nh * hd, nk = B * T * nkv * hd, nl = B * nh * T;
  float *fo = f.out(nq, DType::f32), *fl = f.out(nl, DType::f32);
  float *ho = h.out(nq, DType::bf16), *hl = h.out(nl, DType::f32);
  float *fqp = f.in(q, DType::f32), *fkp = f.in(k, DType::f32), *fvp = f.in(v, DType::f32);
  float *hqp = h.in(q, DType::bf16), *hkp = h.in(k, DType::bf16), *hvp = h.in(v, DType::bf16);
  p.f32->attention_forward(fqp, fkp, fvp, fo, fl, B, T, nh, nkv, hd);
  p.b16->attention_forward(hqp, hkp, hvp, ho, hl, B, T, nh, nkv, hd);
  expect_stored_as(h.get(ho, nq), f.get(fo, nq), DType::bf16, "attention out");
  expect_stored_as(h.get(hl, nl), f.get(fl, nl), DType::f32, "attention lse");
  // Backward reads the saved (bf16) out: give the fp32 op the same values.
  float* fo16 = f.in(h.get(ho, nq), DType::f32);
  float *fdq = f.out(nq, DType::f32), *fdk = f.out(nk, DType::f32), *fdv = f.out(nk, DType::f32);
  float *hdq = h.out(nq, DType::bf16), *hdk = h.out(nk, DType::bf16), *hdv = h.out(nk, DType::bf16);
  p.f32->attention_backward(f.in(dout, DType::f32), fqp, fkp, fvp, fo16, fl, fdq, fdk, fdv, B, T,
                            nh, nkv, hd);
  p.b16->attention_backward(h.in(dout, DType::bf16), hqp, hkp, hvp, ho, hl, hdq, hdk, hdv, B, T,
                            nh, nkv, hd);
  expect_stored_as(h.get(hdq, nq), f.get(fdq, nq), DType::bf16, "attention dq");
  expect_stored_as(h.get(hdk, nk), f.get(fdk, nk), DType::bf16, "attention dk");
  expect_stored_as(h.get(hdv, nk), f.get(fdv, nk), DType::bf16, "attention dv");

  // Property 2: out = softmax(qk^T/sqrt(d)) v on fp32 inputs. The scores move by <= 2u |q||k|
  // /sqrt(d) (rounded q, k); with |q_i|,|k_i| <= 1 and d = 8 that is <= 2u sqrt(8), so the
  // weights move by a factor within exp(+-4u sqrt(8)) ~ 1 +- 0.045; out is a convex combination
  // of rows of v (|v| <= 1, rounded: u), so |dout| <= 0.045 + u + u (store) ~ 0.053.
  const auto q2 = random_vector(nq, 5), k2 = random_vector(nk, 6), v2 = random_vector(nk, 7);
  float *fo2 = f.out(nq, DType::f32), *ho2 = h.out(nq, DType::bf16);
  p.f32->attention_forward(f.in(q2, DType::f32), f.in(k2, DType::f32), f.in(v2, DType::f32), fo2, fl,
                           B, T, nh, nkv, hd);
  p.b16->attention_forward(h.in(q2, DType::bf16), h.in(k2, DType::bf16), h.in(v2, DType::bf16), ho2,
                           hl, B, T, nh, nkv, hd);
  expect_within(h.get(ho2, nq), f.get(fo2, nq), std::vector<double>(nq, 0.053), "attention out vs fp32");
}

TEST(Bf16Storage, RouterValuesStayFp32AndPermutationIsExact) {
  Pair p;
  const int64_t N = 10, E = 6, k = 2, dim = 16;
  const auto logits = random_vector(N * E, 1, -3.f, 3.f);  // router logits: fp32 (not rounded)
  Buffers f(*p.f32), h(*p.b16);
  float *fp = f.out(N * E, DType::f32), *fw = f.out(N * k, DType::f32), *fl = f.out(N, DType::f32);
  float *hp = h.out(N * E, DType::f32), *hw = h.out(N * k, DType::f32), *hl = h.out(N, DType::f32);
  std::vector<int32_t> fi(N * k), hi(N * k);
  p.f32->router_forward(f.in(logits, DType::f32), fp, fi.data(), fw, fl, N, E, k, true);
  p.b16->router_forward(h.in(logits, DType::f32), hp, hi.data(), hw, hl, N, E, k, true);
  expect_stored_as(h.get(hp, N * E), f.get(fp, N * E), DType::f32, "router probs");
  expect_stored_as(h.get(hw, N * k), f.get(fw, N * k), DType::f32, "router weights");
  EXPECT_EQ(fi, hi);
  // Permute: a copy of bf16 rows (exact); unpermute: a weighted sum of rows, stored bf16.
  std::vector<int64_t> counts(E);
  std::vector<int32_t> row(N * k);
  p.b16->moe_permute_indices(hi.data(), N, k, E, counts.data(), row.data());
  const auto x = rounded(random_vector(N * dim, 2));
  float *hx = h.in(x, DType::bf16), *hperm = h.out(N * k * dim, DType::bf16);
  p.b16->moe_permute(hx, row.data(), hperm, N, k, dim);
  const auto perm = h.get(hperm, N * k * dim);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t s = 0; s < k; ++s)
      for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(perm[row[t * k + s] * dim + j], x[t * dim + j]);
  const auto y = rounded(random_vector(N * k * dim, 3));
  float *fu = f.out(N * dim, DType::f32), *hu = h.out(N * dim, DType::bf16);
  p.f32->moe_unpermute(f.in(y, DType::f32), row.data(), fw, fu, N, k, dim);
  p.b16->moe_unpermute(h.in(y, DType::bf16), row.data(), hw, hu, N, k, dim);
  expect_stored_as(h.get(hu, N * dim), f.get(fu, N * dim), DType::bf16, "unpermute out");
}

TEST(Bf16Storage, CrossEntropyReadsBf16LogitsInFp32) {
  Pair p;
  const int64_t N = 8, V = 50;
  const auto logits = rounded(random_vector(N * V, 1, -4.f, 4.f));
  std::vector<int32_t> tgt(N);
  for (int64_t i = 0; i < N; ++i) tgt[i] = int32_t((i * 7) % V);
  tgt[3] = -1;
  Buffers f(*p.f32), h(*p.b16);
  float *fl = f.in(logits, DType::f32), *hl = h.in(logits, DType::bf16);
  float *fls = f.out(N, DType::f32), *fse = f.out(N, DType::f32);
  float *hls = h.out(N, DType::f32), *hse = h.out(N, DType::f32);
  p.f32->cross_entropy_forward(fl, tgt.data(), fls, fse, N, V);
  p.b16->cross_entropy_forward(hl, tgt.data(), hls, hse, N, V);
  expect_stored_as(h.get(hls, N), f.get(fls, N), DType::f32, "ce losses");
  expect_stored_as(h.get(hse, N), f.get(fse, N), DType::f32, "ce lse");
  // dlogits in place over the (bf16) logits, as the LM head does.
  p.f32->cross_entropy_backward(fl, tgt.data(), fse, 0.125f, fl, N, V);
  p.b16->cross_entropy_backward(hl, tgt.data(), hse, 0.125f, hl, N, V);
  expect_stored_as(h.get(hl, N * V), f.get(fl, N * V), DType::bf16, "ce dlogits");
}

// Property 2 for the remaining ops, in norm: ||bf16 path - fp32 op|| / ||fp32 op|| on fp32
// inputs. Each input rounded to bf16 moves by <= u relative and the store adds u; an op whose
// output is a well-conditioned function of c rounded operands (condition ~1: sums of products
// with few cancellations, rotations, smooth pointwise maps) stays within (c + 1) u in norm,
// the per-element worst case, with the count c named per op. Measured: 0.15-0.3 of the bound
// (rounding errors of random data partly cancel).
double rel_norm_gap(const std::vector<float>& got, const std::vector<float>& ref) {
  double d = 0, r = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    d += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]), r += double(ref[i]) * ref[i];
  return std::sqrt(d / r);
}

TEST(Bf16Storage, EveryOpStaysNearFp32InNorm) {
  Pair p;
  Buffers f(*p.f32), h(*p.b16);
  const auto bound = [](int operands) { return (operands + 1) * u; };
  const int64_t rows = 16, dim = 32, F = 24, heads = 2, hd = 16, V = 64;
  const auto x = random_vector(rows * dim, 11, -2.f, 2.f), y = random_vector(rows * dim, 12);
  const auto w = random_vector(dim, 13, 0.5f, 1.5f), dy = random_vector(rows * dim, 14);
  std::vector<int32_t> pos(rows);
  for (int64_t r = 0; r < rows; ++r) pos[r] = int32_t(3 * r);
  const auto run = [&](const char* what, int operands, size_t n, auto&& op) {
    float* fo = f.out(n, DType::f32);
    float* ho = h.out(n, DType::bf16);
    op(*p.f32, f, fo, DType::f32);
    op(*p.b16, h, ho, DType::bf16);
    const double gap = rel_norm_gap(h.get(ho, n), f.get(fo, n));
    EXPECT_LE(gap, bound(operands)) << what;
    EXPECT_GT(gap, 0.0) << what << ": no rounding at all";
    std::printf("%-22s gap %.2e (bound %.2e)\n", what, gap, bound(operands));
  };
  // add: a + b, two rounded operands.
  run("add", 2, rows * dim, [&](Backend& be, Buffers& b, float* o, DType t) {
    be.add(b.in(x, t), b.in(y, t), o, rows * dim);
  });
  // swiglu: silu(g) u, two operands (gate and up), silu is smooth.
  const auto hh = random_vector(rows * 2 * F, 15, -3.f, 3.f);
  run("swiglu_forward", 2, rows * F, [&](Backend& be, Buffers& b, float* o, DType t) {
    be.swiglu_forward(b.in(hh, t), o, rows, F);
  });
  // swiglu backward: dh from dout, gate and up: three operands.
  const auto dsw = random_vector(rows * F, 16);
  run("swiglu_backward", 3, rows * 2 * F, [&](Backend& be, Buffers& b, float* o, DType t) {
    be.swiglu_backward(b.in(dsw, t), b.in(hh, t), o, rows, F);
  });
  // RoPE: a rotation of x (one operand; the angles are fp32 in both).
  run("rope_forward", 1, rows * dim, [&](Backend& be, Buffers& b, float* o, DType t) {
    be.copy(o, b.in(x, t), size_t(rows * dim) * sizeof(float));
    be.rope_forward(o, pos.data(), rows, heads, hd, 10000.f);
  });
  // RMSNorm backward: dx from dy, x, w (three operands; rstd fp32 in both).
  run("rmsnorm_backward", 3, rows * dim, [&](Backend& be, Buffers& b, float* o, DType t) {
    float* rs = b.out(rows, DType::f32);
    float* yy = b.out(rows * dim, t);
    float* xx = b.in(x, t);
    float* ww = b.in(w, t);
    be.rmsnorm_forward(xx, ww, yy, rs, rows, dim, 1e-5f);
    float* dw = b.out(dim, DType::f32);
    be.rmsnorm_backward(b.in(dy, t), xx, ww, rs, o, dw, rows, dim);
  });
  // Unpermute: out = sum_s w_s y_row(t,s); the rows (one operand) rounded, weights fp32.
  const int64_t k = 2, Np = rows;
  std::vector<int32_t> row(Np * k);
  for (int64_t i = 0; i < Np * k; ++i) row[i] = int32_t((i * 7) % (Np * k));
  const auto yr = random_vector(Np * k * dim, 17), wr = random_vector(Np * k, 18, 0.1f, 0.9f);
  run("moe_unpermute", 1, Np * dim, [&](Backend& be, Buffers& b, float* o, DType t) {
    be.moe_unpermute(b.in(yr, t), row.data(), b.in(wr, DType::f32), o, Np, k, dim);
  });
  // Attention backward: dq from dout, q, k, v and the saved out (five operands).
  const int64_t B = 1, T = 8, nh = 2, nkv = 1, ad = 16, nq = B * T * nh * ad, nk = B * T * nkv * ad;
  const auto q = random_vector(nq, 19), kk = random_vector(nk, 20), vv = random_vector(nk, 21),
             dout = random_vector(nq, 22);
  run("attention_backward dq", 5, nq, [&](Backend& be, Buffers& b, float* o, DType t) {
    float *qq = b.in(q, t), *k2 = b.in(kk, t), *v2 = b.in(vv, t);
    float *out = b.out(nq, t), *lse = b.out(B * nh * T, DType::f32);
    be.attention_forward(qq, k2, v2, out, lse, B, T, nh, nkv, ad);
    float *dk = b.out(nk, t), *dv = b.out(nk, t);
    be.attention_backward(b.in(dout, t), qq, k2, v2, out, lse, o, dk, dv, B, T, nh, nkv, ad);
  });
  // Cross-entropy backward: softmax(logits) - onehot, from bf16 logits (one operand).
  const auto logits = random_vector(rows * V, 23, -4.f, 4.f);
  std::vector<int32_t> tgt(rows);
  for (int64_t i = 0; i < rows; ++i) tgt[i] = int32_t((5 * i) % V);
  run("cross_entropy_backward", 1, rows * V, [&](Backend& be, Buffers& b, float* o, DType t) {
    float* lg = b.in(logits, t);
    float *ls = b.out(rows, DType::f32), *lse = b.out(rows, DType::f32);
    be.cross_entropy_forward(lg, tgt.data(), ls, lse, rows, V);
    be.cross_entropy_backward(lg, tgt.data(), lse, 1.f / rows, o, rows, V);
  });
}

TEST(Bf16Storage, AdamWRefusesBf16MastersOrMoments) {
  Pair p;
  Buffers h(*p.b16);
  float *w = h.out(4, DType::bf16), *g = h.out(4, DType::f32), *m = h.out(4, DType::f32),
        *v = h.out(4, DType::f32);
  EXPECT_THROW(p.b16->adamw(w, g, m, v, 4, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1), Error);
}

}  // namespace
}  // namespace origami
