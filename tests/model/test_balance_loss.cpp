// Tests of BalanceLoss (one process): dprobs against finite differences in every mode, micro_batch
// bit-identical to the original formula, the reductions between modes (sequence with one sequence,
// global_batch with one rank and one micro-batch), value 1 at perfect balance, the global_batch
// running mean over micro-batches (pinned by hand) and its reset, dropped slots, and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "base/error.h"
#include "data/local_comm.h"
#include "model/moe/balance_loss.h"
#include "tensor/tensor.h"

namespace origami {
namespace {

using testing::LocalComm;

// The micro-batch balance loss exactly as it was before BalanceLoss existed (frozen copy): the
// micro_batch mode must reproduce it bit for bit, since training curves already depend on it.
double original_micro_batch_loss(const std::vector<int64_t>& c, const std::vector<float>& p,
                                 int64_t N, int64_t E, int64_t k, float grad_scale,
                                 std::vector<float>& dprobs) {
  std::vector<double> mean_p(static_cast<size_t>(E), 0.0);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t i = 0; i < E; ++i) mean_p[size_t(i)] += p[size_t(t * E + i)];
  double loss = 0.0;
  std::vector<float> row(static_cast<size_t>(E));
  for (int64_t i = 0; i < E; ++i) {
    const double f = double(c[size_t(i)]) / double(k * N);
    loss += f * mean_p[size_t(i)] / double(N);
    row[size_t(i)] = float(grad_scale * double(E) * f / double(N));
  }
  dprobs.resize(size_t(N * E));
  for (int64_t t = 0; t < N; ++t) std::copy(row.begin(), row.end(), dprobs.begin() + t * E);
  return double(E) * loss;
}

// A routed micro-batch: full-softmax-like probs (rows sum to 1), the top-k slots with some
// dropped, and the per-expert counts of the kept slots.
struct Batch {
  int64_t B, S, E, k;
  std::vector<float> probs;
  std::vector<int32_t> idx;
  std::vector<int64_t> counts;
  int64_t N() const { return B * S; }
};

Batch random_batch(int64_t B, int64_t S, int64_t E, int64_t k, uint32_t seed, double drop = 0.0) {
  Batch b{B, S, E, k, {}, {}, std::vector<int64_t>(size_t(E), 0)};
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(0.05f, 1.f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  for (int64_t t = 0; t < b.N(); ++t) {
    std::vector<float> row(static_cast<size_t>(E));
    float sum = 0.f;
    for (float& x : row) sum += (x = u(gen));
    for (float& x : row) x /= sum;
    b.probs.insert(b.probs.end(), row.begin(), row.end());
    std::vector<int32_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), gen);
    for (int64_t s = 0; s < k; ++s) {
      const int32_t e = coin(gen) < drop ? -1 : order[size_t(s)];
      b.idx.push_back(e);
      if (e >= 0) ++b.counts[size_t(e)];
    }
  }
  return b;
}

// One CPU backend for the whole test program: BalanceLoss keeps small count buffers on the
// backend it ran on, so the backend must outlive every BalanceLoss of a test.
Backend* cpu_backend() {
  static const std::unique_ptr<Backend> be = make_backend("cpu");
  return be.get();
}

// Backend buffers for one forward call on the CPU backend.
struct Forward {
  Backend* be = cpu_backend();
  double loss = 0.0;
  std::vector<float> dprobs;

  void operator()(BalanceLoss& bl, const Batch& b, float grad_scale) {
    Tensor probs = Tensor::zeros(*be, {b.N(), b.E}), d = Tensor::zeros(*be, {b.N(), b.E});
    IndexTensor idx = IndexTensor::zeros(*be, {b.N(), b.k});
    be->copy_from_host(probs.data(), b.probs.data(), probs.bytes());
    be->copy_from_host(idx.data(), b.idx.data(), idx.bytes());
    be->fill(d.data(), 123.f, d.numel());  // forward must overwrite every element
    TensorOf<double> acc = TensorOf<double>::zeros(*be, {1});  // the value is added to it
    bl.forward(*be, b.counts.data(), nullptr, idx.data(), probs.data(), b.B, b.S, grad_scale,
               acc.data(), d.data());
    be->copy_to_host(&loss, acc.data(), sizeof(double));
    dprobs.resize(size_t(d.numel()));
    be->copy_to_host(dprobs.data(), d.data(), d.bytes());
  }
};

TEST(BalanceLoss, ParsesEveryConfigNameAndRefusesOthers) {
  for (auto m : {BalanceMode::none, BalanceMode::micro_batch, BalanceMode::sequence,
                 BalanceMode::global_batch})
    EXPECT_EQ(parse_balance_mode(balance_mode_name(m)), m);
  try {
    parse_balance_mode("global");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("moe.router.load_balance: 'global'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("none, micro_batch, sequence, global_batch"),
              std::string::npos);
  }
}

TEST(BalanceLoss, MicroBatchIsBitIdenticalToTheOriginalFormula) {
  for (double drop : {0.0, 0.2}) {
    Batch b = random_batch(3, 5, 6, 2, 11, drop);
    BalanceLoss bl(BalanceMode::micro_batch, b.E, b.k, nullptr);
    Forward run;
    run(bl, b, 0.037f);
    std::vector<float> want_d;
    const double want =
        original_micro_batch_loss(b.counts, b.probs, b.N(), b.E, b.k, 0.037f, want_d);
    EXPECT_EQ(run.loss, want);
    EXPECT_EQ(run.dprobs, want_d);
  }
}

// The loss is linear in probs for fixed counts, so central differences are exact up to the
// double rounding of the loss (~1e-16 over a step of ~2e-3); what remains is dprobs' own fp32
// rounding, 2^-24 relative: 1e-6 relative leaves a margin of ~16.
TEST(BalanceLoss, DprobsMatchFiniteDifferencesInEveryMode) {
  LocalComm comm;
  const float gs = 0.29f;
  for (auto mode : {BalanceMode::micro_batch, BalanceMode::sequence, BalanceMode::global_batch}) {
    Batch b = random_batch(3, 4, 5, 2, 7, 0.1);
    Batch earlier = random_batch(3, 4, 5, 2, 8, 0.1);
    BalanceLoss bl(mode, b.E, b.k, &comm);
    Forward run;
    // global_batch: the micro-batch under test is the second of the step, so f is a running mean.
    auto eval = [&](const Batch& x) {
      bl.begin_step();
      if (mode == BalanceMode::global_batch) run(bl, earlier, gs);
      run(bl, x, gs);
      return double(gs) * run.loss;
    };
    eval(b);
    const std::vector<float> grad = run.dprobs;
    for (size_t j = 0; j < b.probs.size(); ++j) {
      Batch x = b;
      x.probs[j] = float(double(b.probs[j]) + 1e-3);
      const double hi = x.probs[j], lp = eval(x);
      x.probs[j] = float(double(b.probs[j]) - 1e-3);
      const double lo = x.probs[j], lm = eval(x);
      const double fd = (lp - lm) / (hi - lo);
      EXPECT_NEAR(grad[j], fd, 1e-6 * std::abs(fd) + 1e-12)
          << balance_mode_name(mode) << " element " << j;
    }
  }
}

TEST(BalanceLoss, SequenceModeWithOneSequenceEqualsMicroBatch) {
  Batch b = random_batch(1, 12, 4, 2, 3, 0.1);
  BalanceLoss micro(BalanceMode::micro_batch, b.E, b.k, nullptr);
  BalanceLoss seq(BalanceMode::sequence, b.E, b.k, nullptr);
  Forward a, s;
  a(micro, b, 0.5f);
  s(seq, b, 0.5f);
  EXPECT_EQ(s.loss, a.loss);
  EXPECT_EQ(s.dprobs, a.dprobs);
  EXPECT_EQ(seq.last_f(), micro.last_f());
}

TEST(BalanceLoss, GlobalBatchOnOneRankAndOneMicroBatchEqualsMicroBatch) {
  LocalComm comm;
  Batch b = random_batch(2, 6, 8, 3, 5, 0.15);
  BalanceLoss micro(BalanceMode::micro_batch, b.E, b.k, nullptr);
  BalanceLoss global(BalanceMode::global_batch, b.E, b.k, &comm);
  Forward a, g;
  a(micro, b, 0.25f);
  g(global, b, 0.25f);
  EXPECT_EQ(g.loss, a.loss);
  EXPECT_EQ(g.dprobs, a.dprobs);
  EXPECT_EQ(global.last_f(), micro.last_f());
}

// Token t of every sequence takes experts 2t, 2t+1 (mod 4): each expert gets k S / E slots per
// sequence, so f = 1/E everywhere and L = sum_i P_i = 1 for any probs (rows sum to 1 in fp32,
// hence the 1e-6).
TEST(BalanceLoss, BalancedRoutingGivesOneInEveryMode) {
  LocalComm comm;
  Batch b = random_batch(3, 4, 4, 2, 9);
  std::fill(b.counts.begin(), b.counts.end(), 0);
  for (int64_t t = 0; t < b.N(); ++t)
    for (int64_t s = 0; s < 2; ++s) {
      b.idx[size_t(t * 2 + s)] = int32_t((2 * t + s) % 4);
      ++b.counts[size_t((2 * t + s) % 4)];
    }
  for (auto mode : {BalanceMode::micro_batch, BalanceMode::sequence, BalanceMode::global_batch}) {
    BalanceLoss bl(mode, b.E, b.k, &comm);
    Forward run;
    run(bl, b, 1.f);
    EXPECT_NEAR(run.loss, 1.0, 1e-6) << balance_mode_name(mode);
    for (double f : bl.last_f()) EXPECT_EQ(f, 0.25) << balance_mode_name(mode);
  }
}

// Two sequences routed to opposite experts: balanced as a micro-batch (L = 1), fully skewed per
// sequence, where f = (1, 0), P = (0.75, 0.25) gives 2 * 0.75 for each.
TEST(BalanceLoss, SequenceModeSeesImbalanceInsideSequences) {
  Batch b{2, 2, 2, 1, {.75f, .25f, .75f, .25f, .25f, .75f, .25f, .75f}, {0, 0, 1, 1}, {2, 2}};
  BalanceLoss micro(BalanceMode::micro_batch, 2, 1, nullptr);
  BalanceLoss seq(BalanceMode::sequence, 2, 1, nullptr);
  Forward a, s;
  a(micro, b, 1.f);
  s(seq, b, 1.f);
  EXPECT_EQ(a.loss, 1.0);
  EXPECT_EQ(s.loss, 1.5);
  EXPECT_EQ(seq.last_f(), (std::vector<double>{1, 0, 0, 1}));
  // d/dprobs of mean_b E sum_i f_i^b P_i^b = E f^b_i / (S B) = f^b_i / 2
  EXPECT_EQ(s.dprobs, (std::vector<float>{0.5f, 0, 0.5f, 0, 0, 0.5f, 0, 0.5f}));
}

TEST(BalanceLoss, DroppedSlotsDoNotCount) {
  // k = 2, one sequence of 2 tokens; 3 of the 4 slots kept: f = (1, 2, 0) / 4, sum 3/4.
  Batch b{1, 2, 3, 2, {0.2f, 0.3f, 0.5f, 0.6f, 0.2f, 0.2f}, {1, -1, 0, 1}, {1, 2, 0}};
  for (auto mode : {BalanceMode::micro_batch, BalanceMode::sequence}) {
    BalanceLoss bl(mode, 3, 2, nullptr);
    Forward run;
    run(bl, b, 1.f);
    EXPECT_EQ(bl.last_f(), (std::vector<double>{0.25, 0.5, 0.0}));
    // 3 * (0.25 * 0.4 + 0.5 * 0.25), P from fp32 probs
    EXPECT_NEAR(run.loss, 3 * (0.25 * 0.4 + 0.5 * 0.25), 1e-7);
  }
}

// E = 2, k = 1, one sequence of 2 tokens per micro-batch; f_i = (B_i / n) / (k N):
//   mb 1: c = (2, 0) -> B = (2, 0), n = 1, f = (1, 0);      P = (.5, .5)   -> L = 2 * .5 = 1
//   mb 2: c = (1, 1) -> B = (3, 1), n = 2, f = (.75, .25);  P = (.75, .25) -> L = 2 * .625 = 1.25
//   mb 3: c = (0, 2) -> B = (3, 3), n = 3, f = (.5, .5);    P = (.25, .75) -> L = 1
// and after begin_step(), c = (0, 2) alone gives f = (0, 1), L = 2 * .75 = 1.5.
TEST(BalanceLoss, GlobalBatchRunningMeanOverMicroBatchesAndReset) {
  LocalComm comm;
  BalanceLoss bl(BalanceMode::global_batch, 2, 1, &comm);
  Forward run;
  const Batch mb1{1, 2, 2, 1, {.5f, .5f, .5f, .5f}, {0, 0}, {2, 0}};
  const Batch mb2{1, 2, 2, 1, {.75f, .25f, .75f, .25f}, {0, 1}, {1, 1}};
  const Batch mb3{1, 2, 2, 1, {.25f, .75f, .25f, .75f}, {1, 1}, {0, 2}};
  run(bl, mb1, 1.f);
  EXPECT_EQ(run.loss, 1.0);
  EXPECT_EQ(bl.last_f(), (std::vector<double>{1, 0}));
  run(bl, mb2, 1.f);
  EXPECT_EQ(run.loss, 1.25);
  EXPECT_EQ(bl.last_f(), (std::vector<double>{.75, .25}));
  EXPECT_EQ(run.dprobs, (std::vector<float>{.75f, .25f, .75f, .25f}));  // E f_i / N
  run(bl, mb3, 1.f);
  EXPECT_EQ(run.loss, 1.0);
  EXPECT_EQ(bl.last_f(), (std::vector<double>{.5, .5}));
  EXPECT_EQ(bl.step_counts(), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(bl.step_micro_batches(), 3);

  bl.begin_step();
  EXPECT_EQ(bl.step_micro_batches(), 0);
  run(bl, mb3, 1.f);
  EXPECT_EQ(bl.last_f(), (std::vector<double>{0, 1}));
  EXPECT_EQ(run.loss, 1.5);
}

TEST(BalanceLoss, NoneWritesZeroGradient) {
  Batch b = random_batch(2, 3, 4, 2, 1);
  BalanceLoss bl(BalanceMode::none, b.E, b.k, nullptr);
  Forward run;
  run(bl, b, 1.f);
  EXPECT_EQ(run.loss, 0.0);
  EXPECT_EQ(run.dprobs, std::vector<float>(b.probs.size(), 0.f));
  EXPECT_TRUE(bl.last_f().empty());
}

TEST(BalanceLoss, RefusesInconsistentInput) {
  EXPECT_THROW(BalanceLoss(BalanceMode::global_batch, 4, 2, nullptr), Error);
  EXPECT_THROW(BalanceLoss(BalanceMode::micro_batch, 4, 5, nullptr), Error);
  Batch b = random_batch(2, 3, 4, 2, 1);
  ++b.counts[0];  // counts that the slots do not add up to
  BalanceLoss seq(BalanceMode::sequence, b.E, b.k, nullptr);
  Forward run;
  EXPECT_THROW(run(seq, b, 1.f), Error);
  Batch bad = random_batch(2, 3, 4, 2, 1);
  bad.idx[3] = 4;  // expert out of range
  EXPECT_THROW(run(seq, bad, 1.f), Error);
}

}  // namespace
}  // namespace origami
