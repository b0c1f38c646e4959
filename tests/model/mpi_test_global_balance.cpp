// Multi-rank tests of the global_batch balance loss on a "multi-domain" batch: every rank routes
// a different skewed distribution (its own favourite expert, with dropped slots). f must be the
// frequency of the whole global batch (checked against every rank's gathered counts, as a running
// mean over micro-batches), and the data-parallel split of a batch must give the same per-token
// gradient and mean loss as one rank holding the whole batch (no 1/DP scaling error).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/moe/balance_loss.h"

namespace origami {
namespace {

constexpr int64_t kB = 2, kS = 8, kE = 4, kK = 2, kN = kB * kS;

struct Batch {
  std::vector<float> probs;    // [N,E]
  std::vector<int32_t> idx;    // [N,k]
  std::vector<int64_t> counts = std::vector<int64_t>(size_t(kE), 0);
};

// Rank r, micro-batch m: the first slot goes to expert (r + m) % E 80% of the time, the probs
// lean the same way, and 10% of slots are dropped.
Batch skewed_batch(int rank, int mb) {
  std::mt19937 gen(uint32_t(1000 * rank + mb + 1));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int32_t fav = int32_t((rank + mb) % kE);
  Batch b;
  for (int64_t t = 0; t < kN; ++t) {
    std::vector<double> w(static_cast<size_t>(kE));
    double sum = 0;
    for (int64_t i = 0; i < kE; ++i) sum += (w[size_t(i)] = u(gen) + (i == fav ? 2.0 : 0.0));
    for (double x : w) b.probs.push_back(float(x / sum));
    const int32_t first = u(gen) < 0.8 ? fav : int32_t(gen() % kE);
    const int32_t second = int32_t((first + 1 + gen() % (kE - 1)) % kE);
    for (int32_t e : {first, second}) {
      const int32_t kept = u(gen) < 0.1 ? -1 : e;
      b.idx.push_back(kept);
      if (kept >= 0) ++b.counts[size_t(kept)];
    }
  }
  return b;
}

class GlobalBalance : public ::testing::Test {
 protected:
  void SetUp() override {
    world = make_mpi_world();
    rank = world->rank();
    size = world->size();
  }
  // Unscaled loss of `bl` on `b` (B sequences of S); dprobs written to `d`.
  double run(BalanceLoss& bl, const Batch& b, int64_t B, int64_t S, float gs,
             std::vector<float>& d) {
    d.assign(b.probs.size(), 0.f);  // CPU backend memory is host memory
    double loss = 0.0;
    bl.forward(*be, b.counts.data(), nullptr, b.idx.data(), b.probs.data(), B, S, gs, &loss,
               d.data());
    return loss;
  }
  std::unique_ptr<Communicator> world;
  std::unique_ptr<Backend> be = make_backend("cpu");
  int rank = 0, size = 1;
};

TEST_F(GlobalBalance, FrequenciesAreTheWholeBatchsRunningMean) {
  BalanceLoss global(BalanceMode::global_batch, kE, kK, world.get());
  BalanceLoss micro(BalanceMode::micro_batch, kE, kK, nullptr);
  std::vector<float> d;
  for (int step = 0; step < 2; ++step) {
    global.begin_step();
    std::vector<int64_t> step_sum(size_t(kE), 0);  // every rank's counts, by hand
    double sum_global = 0, sum_micro = 0;
    for (int mb = 0; mb < 3; ++mb) {
      const Batch b = skewed_batch(rank, 3 * step + mb);
      const double lg = run(global, b, kB, kS, 1.f, d);
      const double lm = run(micro, b, kB, kS, 1.f, d);

      std::vector<int64_t> all(size_t(kE * size));
      world->allgather(b.counts.data(), all.data(), kE, CommDType::i64);
      for (int r = 0; r < size; ++r)
        for (int64_t i = 0; i < kE; ++i) step_sum[size_t(i)] += all[size_t(r * kE + i)];
      double f_total = 0, want = 0;
      for (int64_t i = 0; i < kE; ++i) {
        const double f = (double(step_sum[size_t(i)]) / (mb + 1)) / double(kK * kN * size);
        EXPECT_DOUBLE_EQ(global.last_f()[size_t(i)], f) << "step " << step << " mb " << mb;
        double p = 0;
        for (int64_t t = 0; t < kN; ++t) p += b.probs[size_t(t * kE + i)];
        want += kE * f * p / kN;
        f_total += f;
      }
      EXPECT_NEAR(lg, want, 1e-12);
      EXPECT_LT(f_total, 1.0);  // some slots were dropped: they count for no expert
      // Each rank's batch is skewed its own way: the local and global frequencies disagree.
      EXPECT_GT(std::abs(lm - lg), 1e-3) << "rank " << rank << " mb " << mb;
      sum_global += lg;
      sum_micro += lm;
    }
    EXPECT_EQ(global.step_micro_batches(), 3);
    // Averaged over the group, per-rank balancing penalises the domain skew that the global
    // batch does not have.
    EXPECT_LT(world->allreduce_scalar(sum_global), world->allreduce_scalar(sum_micro));
  }
}

// DP = size ranks with N tokens each and grad_scale 1/size (the trainer's per-micro-batch scale)
// against one rank holding all size*N tokens with grad_scale 1: the same f, the same gradient on
// every token, and the mean of the rank losses equal to the one-rank loss.
TEST_F(GlobalBalance, DataParallelSplitMatchesOneRankWithTheWholeBatch) {
  BalanceLoss global(BalanceMode::global_batch, kE, kK, world.get());
  const Batch b = skewed_batch(rank, 0);
  std::vector<float> d;
  const double loss = run(global, b, kB, kS, 1.f / float(size), d);

  Batch whole;
  whole.probs.resize(size_t(size * kN * kE));
  whole.idx.resize(size_t(size * kN * kK));
  std::vector<int64_t> all_counts(size_t(size * kE));
  world->allgather(b.probs.data(), whole.probs.data(), kN * kE, CommDType::f32);
  world->allgather(b.idx.data(), whole.idx.data(), kN * kK, CommDType::i32);
  world->allgather(b.counts.data(), all_counts.data(), kE, CommDType::i64);
  for (int r = 0; r < size; ++r)
    for (int64_t i = 0; i < kE; ++i) whole.counts[size_t(i)] += all_counts[size_t(r * kE + i)];
  BalanceLoss one_rank(BalanceMode::micro_batch, kE, kK, nullptr);
  std::vector<float> d_whole;
  const double loss_whole = run(one_rank, whole, kB * size, kS, 1.f, d_whole);

  EXPECT_EQ(global.last_f(), one_rank.last_f());
  for (int64_t j = 0; j < kN * kE; ++j)
    EXPECT_FLOAT_EQ(d[size_t(j)], d_whole[size_t(rank * kN * kE + j)]) << "element " << j;
  // Sums of the same terms in a different order: ~1e-16 relative.
  EXPECT_NEAR(world->allreduce_scalar(loss) / size, loss_whole, 1e-12);
}

}  // namespace
}  // namespace origami
