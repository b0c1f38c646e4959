// Multi-rank tests of DistributedOptimizer (ZeRO-1) against the plain path it replaces: all-reduce
// the gradients, global norm, clip, AdamW on the full buffer. Every rank feeds both paths the same
// random gradients (different on each rank); after each step every rank's full value buffer must
// match. The parameters have odd sizes and weight-decay-free ones straddle shard boundaries.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/rng.h"
#include "comm/communicator.h"
#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"

namespace origami {
namespace {

ParamSpec spec(std::string name, std::vector<int64_t> shape, GradGroup g, bool wd) {
  ParamSpec s;
  s.name = std::move(name);
  s.global_shape = std::move(shape);
  s.grad_group = g;
  s.weight_decay = wd;
  s.init_std = 1.0;  // O(1) values, so weight decay (lr * wd * value) moves them far beyond tol
  return s;
}

// Dense 35 + 13 + 33 + 9 = 90, expert 42 + 5 + 42 = 89: neither divides by 2 or 4, and with 2 or
// 4 ranks a shard boundary falls inside "norm1" (dense 35..48) and "experts.norm" (expert 42..47).
std::vector<ParamSpec> small_model() {
  return {spec("embedding", {7, 5}, GradGroup::dense, true),
          spec("norm1", {13}, GradGroup::dense, false),
          spec("proj", {3, 11}, GradGroup::dense, true),
          spec("norm2", {9}, GradGroup::dense, false),
          spec("experts.fc1", {2, 3, 7}, GradGroup::expert, true),
          spec("experts.norm", {5}, GradGroup::expert, false),
          spec("experts.fc2", {2, 7, 3}, GradGroup::expert, true)};
}

OptimizerConfig adam_config() {
  OptimizerConfig c;
  c.weight_decay = 0.1;
  c.beta1 = 0.9;
  c.beta2 = 0.95;
  c.eps = 1e-8;
  c.grad_clip = 1.0;  // kClip
  return c;
}

constexpr double kLr = 1e-2, kClip = 1.0;
// Gradient magnitude per step: clipped (norm ~ 10-20 > clip), not clipped (norm ~ 0.02), clipped.
constexpr double kGradMagnitude[] = {1.0, 1e-3, 3.0};
constexpr int kSteps = 3;

void build(ParamStore& ps, Backend& be, const std::vector<ParamSpec>& specs) {
  for (const auto& s : specs) ps.declare(s);
  ps.finalize(be, 1234);
}

std::vector<float> to_host(Backend& be, const Tensor& t) {
  std::vector<float> h(size_t(t.numel()));
  be.copy_to_host(h.data(), t.data(), t.bytes());
  return h;
}

// This rank's local gradients for `step`: the same for both paths, different on every rank.
void fill_grads(Backend& be, ParamStore& ps, int rank, int step) {
  const Rng rng(uint64_t(1000 + step), uint64_t(rank));
  std::vector<float> g(size_t(ps.count()));
  for (size_t i = 0; i < g.size(); ++i) g[i] = float(kGradMagnitude[step] * rng.normal(i));
  be.copy_from_host(ps.all_grads().data(), g.data(), g.size() * sizeof(float));
}

struct Trajectory {
  std::vector<std::vector<float>> values;  // full value buffer after each step
  std::vector<double> norms, scales;
};

// The plain path: all-reduce each group's gradients, global norm, clip, AdamW everywhere.
Trajectory run_plain(const Communicator& world, const std::vector<ParamSpec>& specs) {
  auto be = make_backend("cpu");
  ParamStore ps;
  build(ps, *be, specs);
  // Both gradient groups all-reduced over the world; expert gradients are replicated over it
  // here (no expert parallelism), so no expert-shard group.
  AdamW opt(*be, ps, adam_config(), GradientGroups{.dense = &world, .expert = &world});
  Trajectory tr;
  for (int s = 0; s < kSteps; ++s) {
    fill_grads(*be, ps, world.rank(), s);
    opt.reduce_gradients();
    const double norm = opt.grad_norm();
    tr.norms.push_back(norm);
    tr.scales.push_back(opt.step(kLr, norm));
    tr.values.push_back(to_host(*be, ps.all_values()));
  }
  return tr;
}

// The ZeRO-1 path, as the trainer runs it. Also checks, each step, that the shard sums of
// squares add up to the sum of squares of the whole reduced gradient (gathered from the shards).
Trajectory run_distributed(const Communicator& world, const std::vector<ParamSpec>& specs,
                           int64_t bucket) {
  auto be = make_backend("cpu");
  ParamStore ps;
  build(ps, *be, specs);
  DistributedOptimizer opt(*be, ps, adam_config(),
                           GradientGroups{.dense = &world, .expert = &world}, bucket);
  Trajectory tr;
  for (int s = 0; s < kSteps; ++s) {
    fill_grads(*be, ps, world.rank(), s);
    opt.reduce_scatter_gradients();
    double sum_squares = 0.0;
    for (GradGroup g : {GradGroup::dense, GradGroup::expert}) {
      const double group_ss = world.allreduce_scalar(opt.shard_sum_squares(g));
      // Gather the reduced shards into one full gradient of the group and compare.
      const auto [begin, end] = opt.shard_range(g);
      const int64_t cap = opt.shard_capacity(g);
      std::vector<float> shard(size_t(cap), 0.f), full(size_t(cap * world.size()));
      be->copy_to_host(shard.data(), ps.grads(g).data() + begin, size_t(end - begin) * sizeof(float));
      world.allgather(shard.data(), full.data(), cap, CommDType::f32);
      double want = 0.0;  // padding gathered as zeros adds nothing
      for (float x : full) want += double(x) * double(x);
      // Both are fp64 sums of the same floats in different orders.
      EXPECT_NEAR(group_ss, want, 1e-12 * want) << "step " << s;
      sum_squares += group_ss;
    }
    const double norm = std::sqrt(sum_squares);
    const double scale = norm > kClip ? kClip / (norm + 1e-6) : 1.0;  // as clip_factor
    EXPECT_EQ(opt.step(kLr, norm), scale);
    EXPECT_EQ(opt.steps(), s + 1);
    tr.norms.push_back(norm);
    tr.scales.push_back(scale);
    tr.values.push_back(to_host(*be, ps.all_values()));
  }
  return tr;
}

// Relative error of a against b, with an O(1) floor: values are O(1) (init_std 1), and fp32
// gradient sums in a different rank order differ by ~1e-7 relative, moving AdamW's update by
// ~lr * 1e-7, far below 1e-6 of the value; a value that crosses 0 gets an absolute 1e-6.
double rel_err(float a, float b) { return std::fabs(double(a) - double(b)) / std::max(1.0, std::fabs(double(b))); }

}  // namespace

namespace zero_tests {  // a namespace of its own: the suite is named like the class under test

class DistributedOptimizer : public ::testing::Test {
 protected:
  void SetUp() override {
    world = make_mpi_world();
    rank = world->rank();
    size = world->size();
  }
  std::unique_ptr<Communicator> world;
  int rank = 0, size = 1;
};

TEST_F(DistributedOptimizer, ShardsTileEachRangeAndCutWeightDecayFreeParams) {
  auto be = make_backend("cpu");
  ParamStore ps;
  build(ps, *be, small_model());
  origami::DistributedOptimizer opt(*be, ps, adam_config(),
                                    GradientGroups{.dense = world.get(), .expert = world.get()}, 7);
  const float* base = ps.all_values().data();
  for (GradGroup g : {GradGroup::dense, GradGroup::expert}) {
    const int64_t count = ps.count(g), cap = opt.shard_capacity(g);
    EXPECT_EQ(cap, (count + size - 1) / size);
    const auto [begin, end] = opt.shard_range(g);
    int64_t mine[2] = {begin, end};
    std::vector<int64_t> all(size_t(2 * size));
    world->allgather(mine, all.data(), 2, CommDType::i64);
    for (int q = 0; q < size; ++q) {  // contiguous, equal, only the last ones short
      EXPECT_EQ(all[size_t(2 * q)], std::min<int64_t>(q * cap, count)) << "rank " << q;
      EXPECT_EQ(all[size_t(2 * q + 1)], std::min<int64_t>((q + 1) * cap, count)) << "rank " << q;
    }
    EXPECT_EQ(all.back(), count);
    // The geometry the update test relies on: a boundary inside a parameter without decay.
    const int64_t group_off = ps.values(g).data() - base;
    bool straddled = false;
    for (const auto& p : ps.all()) {
      if (p.spec.grad_group != g || p.spec.weight_decay) continue;
      const int64_t off = p.value.data() - base - group_off;
      for (int q = 1; q < size; ++q)
        straddled |= off < q * cap && q * cap < off + p.value.numel();
    }
    EXPECT_TRUE(straddled) << "group " << int(g);
    EXPECT_EQ(opt.exp_avg(g).numel(), cap);
    EXPECT_EQ(opt.exp_avg_sq(g).numel(), cap);
  }
}

TEST_F(DistributedOptimizer, MatchesAllReduceAdamWWithBucketsSmallerThanAShard) {
  const auto specs = small_model();
  const Trajectory plain = run_plain(*world, specs);
  const Trajectory zero = run_distributed(*world, specs, 7);  // shards are 23..45 elements
  bool clipped = false, unclipped = false;
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(zero.norms[size_t(s)], plain.norms[size_t(s)], 1e-6 * plain.norms[size_t(s)]);
    EXPECT_NEAR(zero.scales[size_t(s)], plain.scales[size_t(s)], 1e-6);
    clipped |= plain.scales[size_t(s)] < 1.0;
    unclipped |= plain.scales[size_t(s)] == 1.0;
    const auto& want = plain.values[size_t(s)];
    const auto& got = zero.values[size_t(s)];
    ASSERT_EQ(got.size(), want.size());
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < want.size(); ++i)
      if (rel_err(got[i], want[i]) > worst) worst = rel_err(got[i], want[i]), at = i;
    EXPECT_LE(worst, 1e-6) << "step " << s << " element " << at << ": " << got[at] << " vs "
                           << want[at];
  }
  EXPECT_TRUE(clipped && unclipped) << "the steps must exercise both clip branches";
  // The update really moved the parameters (so the comparison above is not of two no-ops).
  const auto init = [&] {
    auto be = make_backend("cpu");
    ParamStore ps;
    build(ps, *be, specs);
    return to_host(*be, ps.all_values());
  }();
  for (size_t i = 0; i < init.size(); ++i) EXPECT_GT(std::fabs(zero.values[0][i] - init[i]), 1e-4) << i;
}

TEST_F(DistributedOptimizer, EveryRankEndsWithTheSameValues) {
  const Trajectory zero = run_distributed(*world, small_model(), 7);
  std::vector<float> root = zero.values.back();
  world->broadcast(root.data(), int64_t(root.size()), CommDType::f32, 0);
  EXPECT_EQ(zero.values.back(), root);
}

// Bucketing only changes how many elements one collective moves, never which elements are summed.
// MPI picks its reduction algorithm (so the order in which the ranks' fp32 values are added) by
// message size, so beyond 2 ranks a bucket may differ from one call by fp32 rounding of the sum:
// the same 1e-6 tolerance as against all-reduce; a packing error would be O(1). With a fixed bucket
// size the run is deterministic: bitwise the same every time.
TEST_F(DistributedOptimizer, BucketSizeDoesNotChangeTheResult) {
  const auto specs = small_model();
  const Trajectory one_call = run_distributed(*world, specs, 1 << 20);
  for (int64_t bucket : {1, 7, 16}) {
    const Trajectory bucketed = run_distributed(*world, specs, bucket);
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(bucketed.norms[size_t(s)], one_call.norms[size_t(s)], 1e-6 * one_call.norms[size_t(s)]);
      const auto& got = bucketed.values[size_t(s)];
      const auto& want = one_call.values[size_t(s)];
      for (size_t i = 0; i < want.size(); ++i)
        EXPECT_LE(rel_err(got[i], want[i]), 1e-6) << "bucket " << bucket << " step " << s << " element " << i;
    }
    EXPECT_EQ(run_distributed(*world, specs, bucket).values, bucketed.values) << "bucket " << bucket;
  }
}

TEST_F(DistributedOptimizer, WorksWithAnEmptyGroup) {
  // A dense-only model (no MoE layer): the expert group has nothing to shard.
  std::vector<ParamSpec> specs = small_model();
  std::erase_if(specs, [](const ParamSpec& s) { return s.grad_group == GradGroup::expert; });
  const Trajectory plain = run_plain(*world, specs);
  const Trajectory zero = run_distributed(*world, specs, 5);
  for (size_t i = 0; i < plain.values.back().size(); ++i)
    EXPECT_LE(rel_err(zero.values.back()[i], plain.values.back()[i]), 1e-6) << i;
}

TEST_F(DistributedOptimizer, MomentMemoryIsAboutOneOverGroupSize) {
  const std::vector<ParamSpec> specs = {spec("w", {301, 7}, GradGroup::dense, true),
                                        spec("experts.w", {3, 97}, GradGroup::expert, true)};
  auto be = make_backend("cpu");
  ParamStore ps;
  build(ps, *be, specs);
  const int64_t bucket = 64;
  const size_t before = be->bytes_in_use();
  const size_t adamw_bytes = [&] {
    AdamW full(*be, ps, adam_config());
    return be->bytes_in_use() - before;
  }();
  origami::DistributedOptimizer opt(*be, ps, adam_config(),
                                    GradientGroups{.dense = world.get(), .expert = world.get()}, bucket);
  const size_t zero_bytes = be->bytes_in_use() - before;
  EXPECT_EQ(adamw_bytes, 2 * sizeof(float) * size_t(ps.count()));
  // Moments: 2 x ceil(count / size) per group; staging: (size + 1) x bucket floats.
  const size_t moments = adamw_bytes / size_t(size) + 2 * 2 * sizeof(float);
  EXPECT_LE(zero_bytes, moments + sizeof(float) * size_t((size + 1) * bucket));
  EXPECT_GE(zero_bytes, adamw_bytes / size_t(size));
}

TEST_F(DistributedOptimizer, RejectsANonPositiveBucket) {
  auto be = make_backend("cpu");
  ParamStore ps;
  build(ps, *be, small_model());
  try {
    origami::DistributedOptimizer opt(*be, ps, adam_config(),
                                      GradientGroups{.dense = world.get(), .expert = world.get()}, 0);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bucket_elements"), std::string::npos) << e.what();
  }
}

}  // namespace zero_tests
}  // namespace origami
