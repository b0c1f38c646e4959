// Tests of causal grouped-query attention: forward (out and lse) against a naive double
// reference that materialises the masked T x T softmax, backward (dq, dk, dv) against central
// finite differences of L = sum(out * R), for GQA (nh != nkv), MQA and MHA, T not a power of 2.
// The context-parallel form (queries of a chunk at an offset, keys of the whole sequence) must
// give the square op's rows, natively and through the Backend's padded default.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend/backend.h"
#include "backend_test_util.h"
#include "base/error.h"

namespace origami {
namespace {

using namespace origami::testing;

struct Shape {
  int64_t B, T, nh, nkv, hd;
};

void reference_attention(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
                         const std::vector<float>& v, std::vector<double>& out,
                         std::vector<double>& lse) {
  out.assign(s.B * s.T * s.nh * s.hd, 0.0);
  lse.assign(s.B * s.nh * s.T, 0.0);
  const double scale = 1.0 / std::sqrt(double(s.hd));
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.nh; ++h) {
      const int64_t g = h / (s.nh / s.nkv);
      for (int64_t t = 0; t < s.T; ++t) {
        std::vector<double> sc(s.T, -std::numeric_limits<double>::infinity());
        double mx = sc[0];
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t c = 0; c < s.hd; ++c) {
            d += double(q[((b * s.T + t) * s.nh + h) * s.hd + c]) *
                 k[((b * s.T + j) * s.nkv + g) * s.hd + c];
          }
          sc[j] = d * scale;
          mx = std::max(mx, sc[j]);
        }
        double den = 0;
        for (int64_t j = 0; j <= t; ++j) den += std::exp(sc[j] - mx);
        lse[(b * s.nh + h) * s.T + t] = mx + std::log(den);
        for (int64_t j = 0; j <= t; ++j) {
          const double p = std::exp(sc[j] - mx) / den;
          for (int64_t c = 0; c < s.hd; ++c) {
            out[((b * s.T + t) * s.nh + h) * s.hd + c] +=
                p * v[((b * s.T + j) * s.nkv + g) * s.hd + c];
          }
        }
      }
    }
  }
}

class CpuAttention : public ::testing::TestWithParam<Shape> {};

TEST_P(CpuAttention, ForwardMatchesNaiveReference) {
  const Shape s = GetParam();
  auto be = make_backend("cpu");
  // Scores of O(3) so the softmax is far from uniform and the row max matters.
  auto q = random_vector(s.B * s.T * s.nh * s.hd, 1, -2.f, 2.f);
  auto k = random_vector(s.B * s.T * s.nkv * s.hd, 2, -2.f, 2.f);
  auto v = random_vector(s.B * s.T * s.nkv * s.hd, 3);
  std::vector<float> out(q.size()), lse(s.B * s.nh * s.T);
  be->attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), s.B, s.T, s.nh,
                        s.nkv, s.hd);
  std::vector<double> want_out, want_lse;
  reference_attention(s, q, k, v, want_out, want_lse);
  // fp32 dot products of length hd (<= 16) and softmax sums of <= T terms: ~1e-6 relative.
  expect_near_rel(out, want_out, 1e-5, 1e-6, "attention out");
  expect_near_rel(lse, want_lse, 1e-5, 1e-6, "attention lse");
  // The first query of each sequence sees only itself: out = v[0] of its kv head.
  for (int64_t h = 0; h < s.nh; ++h) {
    const int64_t g = h / (s.nh / s.nkv);
    EXPECT_FLOAT_EQ(out[h * s.hd], v[g * s.hd]) << "head " << h;
  }
}

TEST_P(CpuAttention, BackwardMatchesFiniteDifferences) {
  const Shape s = GetParam();
  auto be = make_backend("cpu");
  auto q = random_vector(s.B * s.T * s.nh * s.hd, 4, -1.5f, 1.5f);
  auto k = random_vector(s.B * s.T * s.nkv * s.hd, 5, -1.5f, 1.5f);
  auto v = random_vector(s.B * s.T * s.nkv * s.hd, 6);
  auto R = random_vector(q.size(), 7);
  std::vector<float> out(q.size()), lse(s.B * s.nh * s.T);
  auto loss = [&] {
    be->attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), s.B, s.T, s.nh,
                          s.nkv, s.hd);
    return weighted_sum(out, R);
  };
  // h = 5e-3: softmax curvature is O(1) at these score sizes, truncation ~h^2 = 2.5e-5
  // relative; fp32 noise of L (a few hundred terms, ~1e-6 total) / 2h ~ 1e-4 absolute against
  // gradients of ~0.1..1. The bound 5e-3 (floored at 5% of the largest entry) is ~5x that.
  auto fdq = finite_diff(q, loss, 5e-3);
  auto fdk = finite_diff(k, loss, 5e-3);
  auto fdv = finite_diff(v, loss, 5e-3);
  loss();
  std::vector<float> dq(q.size(), 9.f), dk(k.size(), 9.f), dv(v.size(), 9.f);  // overwritten
  be->attention_backward(R.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                         dq.data(), dk.data(), dv.data(), s.B, s.T, s.nh, s.nkv, s.hd);
  expect_grad_near(dq, fdq, 5e-3, "dq");
  expect_grad_near(dk, fdk, 5e-3, "dk");
  expect_grad_near(dv, fdv, 5e-3, "dv");
}

// Queries at positions [q0, q0 + Tq) against keys [0, T): the square op's rows q0.. (forward),
// and with dout zero outside the chunk its dq rows and whole dk/dv (backward).
TEST_P(CpuAttention, OffsetChunkMatchesTheSquareOpRows) {
  const Shape s = GetParam();
  auto be = make_backend("cpu");
  const int64_t T = s.T, q0 = T / 3, Tq = T - q0 - T / 4, w = s.nh * s.hd, kw = s.nkv * s.hd;
  auto q = random_vector(s.B * T * w, 11, -2.f, 2.f);
  auto k = random_vector(s.B * T * kw, 12, -2.f, 2.f);
  auto v = random_vector(s.B * T * kw, 13);
  auto R = random_vector(q.size(), 14);
  std::vector<float> out(q.size()), lse(s.B * s.nh * T);
  be->attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), s.B, T, s.nh, s.nkv,
                        s.hd);
  std::vector<float> dout(q.size(), 0.f);
  std::vector<float> qc(s.B * Tq * w), doc(qc.size());
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < Tq * w; ++i) {
      const int64_t full = (b * T + q0) * w + i;
      qc[b * Tq * w + i] = q[full];
      doc[b * Tq * w + i] = dout[full] = R[full];
    }
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  be->attention_backward(dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                         dq.data(), dk.data(), dv.data(), s.B, T, s.nh, s.nkv, s.hd);
  for (bool native : {true, false}) {
    SCOPED_TRACE(native ? "CPU kernel" : "Backend's padded default");
    std::vector<float> oc(qc.size(), 9.f), lc(s.B * s.nh * Tq, 9.f), dqc(qc.size(), 9.f),
        dkc(k.size(), 9.f), dvc(v.size(), 9.f);
    if (native) {
      be->attention_forward_offset(qc.data(), k.data(), v.data(), oc.data(), lc.data(), s.B, Tq, T,
                                   q0, s.nh, s.nkv, s.hd);
      be->attention_backward_offset(doc.data(), qc.data(), k.data(), v.data(), oc.data(),
                                    lc.data(), dqc.data(), dkc.data(), dvc.data(), s.B, Tq, T, q0,
                                    s.nh, s.nkv, s.hd);
    } else {
      be->Backend::attention_forward_offset(qc.data(), k.data(), v.data(), oc.data(), lc.data(),
                                            s.B, Tq, T, q0, s.nh, s.nkv, s.hd);
      be->Backend::attention_backward_offset(doc.data(), qc.data(), k.data(), v.data(), oc.data(),
                                             lc.data(), dqc.data(), dkc.data(), dvc.data(), s.B,
                                             Tq, T, q0, s.nh, s.nkv, s.hd);
    }
    // Each query's sums run over the same keys 0..p in the same order as the square op's, so the
    // results agree to fp32 rounding of O(1) values: 1e-6 absolute (about 8 ulps).
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t i = 0; i < Tq * w; ++i) {
        ASSERT_NEAR(oc[b * Tq * w + i], out[(b * T + q0) * w + i], 1e-6f) << "out " << b << "," << i;
        ASSERT_NEAR(dqc[b * Tq * w + i], dq[(b * T + q0) * w + i], 1e-6f) << "dq " << b << "," << i;
      }
      for (int64_t h = 0; h < s.nh; ++h)
        for (int64_t t = 0; t < Tq; ++t)
          ASSERT_NEAR(lc[(b * s.nh + h) * Tq + t], lse[(b * s.nh + h) * T + q0 + t], 1e-6f);
    }
    for (size_t i = 0; i < dk.size(); ++i) {
      ASSERT_NEAR(dkc[i], dk[i], 1e-6f) << "dk " << i;
      ASSERT_NEAR(dvc[i], dv[i], 1e-6f) << "dv " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuAttention,
                         ::testing::Values(Shape{2, 7, 4, 2, 8},    // GQA, group of 2
                                           Shape{1, 5, 6, 2, 4},    // GQA, group of 3
                                           Shape{1, 6, 3, 1, 16},   // MQA
                                           Shape{2, 3, 2, 2, 4}),   // MHA
                         [](const auto& info) {
                           const Shape& s = info.param;
                           return "B" + std::to_string(s.B) + "T" + std::to_string(s.T) + "nh" +
                                  std::to_string(s.nh) + "nkv" + std::to_string(s.nkv) + "hd" +
                                  std::to_string(s.hd);
                         });

TEST(CpuAttentionErrors, HeadsNotAMultipleOfKvHeads) {
  auto be = make_backend("cpu");
  std::vector<float> buf(64);
  try {
    be->attention_forward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), 1, 1, 3, 2,
                          4);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of kv heads"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace origami
