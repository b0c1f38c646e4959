// Bitwise determinism of the CPU backend across OpenMP thread counts (1, 2, 3) for every op that
// reduces: sum/sum_squares, embedding and RMSNorm parameter gradients, attention backward (dk/dv
// sum over heads and queries), router, cross-entropy, batched GEMM. Sizes are above each op's
// parallel threshold so the multi-threaded paths really run.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <functional>

#include "backend/backend.h"
#include "backend_test_util.h"

namespace origami {
namespace {

using testing::random_vector;

// Runs `op` (which writes its results into `outputs`) at several thread counts and expects the
// bytes of every output to be identical to the single-threaded run.
void expect_thread_count_independent(const std::vector<std::vector<float>*>& outputs,
                                     const std::function<void()>& op, const char* what) {
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> reference;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    op();
    if (threads == 1) {
      for (auto* o : outputs) reference.push_back(*o);
      continue;
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      EXPECT_EQ(std::memcmp(outputs[i]->data(), reference[i].data(),
                            reference[i].size() * sizeof(float)),
                0)
          << what << ": output " << i << " differs between 1 and " << threads << " threads";
    }
  }
  omp_set_num_threads(saved);
}

TEST(CpuDeterminism, Reductions) {
  auto be = make_backend("cpu");
  auto x = random_vector(200001, 1);
  std::vector<float> out(2);
  expect_thread_count_independent(
      {&out},
      [&] {
        // Stored as fp32 pairs (hi, lo) of the doubles so memcmp sees every bit.
        const double s = be->sum(x.data(), int64_t(x.size()));
        const double ss = be->sum_squares(x.data(), int64_t(x.size()));
        out = {float(s), float(s - double(float(s)))};
        out.push_back(float(ss));
        out.push_back(float(ss - double(float(ss))));
      },
      "sum/sum_squares");
}

TEST(CpuDeterminism, EmbeddingAndRmsnormParameterGradients) {
  auto be = make_backend("cpu");
  const int64_t n = 512, dim = 200, vocab = 17;  // many repeated ids per table row
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t((i * 7) % vocab);
  auto dout = random_vector(n * dim, 2), x = random_vector(n * dim, 3), w = random_vector(dim, 4);
  std::vector<float> dtable, y(n * dim), rstd(n), dx(n * dim), dw;
  expect_thread_count_independent(
      {&dtable, &y, &dx, &dw},
      [&] {
        dtable.assign(vocab * dim, 0.f);
        dw.assign(dim, 0.f);
        be->embedding_backward(dout.data(), ids.data(), dtable.data(), n, dim);
        be->rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), n, dim, 1e-5f);
        be->rmsnorm_backward(dout.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(),
                             n, dim);
      },
      "embedding/rmsnorm");
}

TEST(CpuDeterminism, AttentionForwardBackward) {
  auto be = make_backend("cpu");
  const int64_t B = 2, T = 37, nh = 4, nkv = 2, hd = 16;
  auto q = random_vector(B * T * nh * hd, 5), k = random_vector(B * T * nkv * hd, 6);
  auto v = random_vector(B * T * nkv * hd, 7), dout = random_vector(q.size(), 8);
  std::vector<float> out(q.size()), lse(B * nh * T), dq(q.size()), dk(k.size()), dv(v.size());
  expect_thread_count_independent(
      {&out, &lse, &dq, &dk, &dv},
      [&] {
        be->attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), B, T, nh, nkv,
                              hd);
        be->attention_backward(dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                               dq.data(), dk.data(), dv.data(), B, T, nh, nkv, hd);
      },
      "attention");
}

TEST(CpuDeterminism, RouterCrossEntropyAndBatchedGemm) {
  auto be = make_backend("cpu");
  const int64_t N = 300, E = 16, k = 2, V = 500;
  auto z = random_vector(N * E, 9), dw = random_vector(N * k, 10), logits = random_vector(N * V, 11);
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; ++i) targets[i] = i % 5 == 0 ? -1 : int32_t((i * 31) % V);
  std::vector<float> probs(N * E), w(N * k), lse(N), dz(N * E), losses(N), clse(N), dl(N * V);
  std::vector<int32_t> idx(N * k);
  // 24 small GEMMs of varied shapes: takes the one-GEMM-per-thread path at 2 and 3 threads.
  std::vector<std::vector<float>> as, bs;
  for (int i = 0; i < 24; ++i) {
    as.push_back(random_vector(size_t(8 + i) * 32, 100 + i));
    bs.push_back(random_vector(32 * 24, 200 + i));
  }
  std::vector<float> c(24 * 31 * 24);
  expect_thread_count_independent(
      {&probs, &w, &lse, &dz, &losses, &clse, &dl, &c},
      [&] {
        be->router_forward(z.data(), probs.data(), idx.data(), w.data(), lse.data(), N, E, k, true);
        be->router_backward(dw.data(), probs.data(), lse.data(), probs.data(), idx.data(),
                            w.data(), dz.data(), N, E, k, true);
        be->cross_entropy_forward(logits.data(), targets.data(), losses.data(), clse.data(), N, V);
        be->cross_entropy_backward(logits.data(), targets.data(), clse.data(), 0.01f, dl.data(),
                                   N, V);
        std::vector<GemmDesc> ds;
        for (int i = 0; i < 24; ++i) {
          ds.push_back(GemmDesc{false, false, 8 + i, 24, 32, 1.f, as[i].data(), 0, bs[i].data(), 0,
                                0.f, c.data() + i * 31 * 24, 0});
        }
        be->gemm_batched(ds);
      },
      "router/cross-entropy/gemm_batched");
}

}  // namespace
}  // namespace origami
