// FSSDP end to end (model/moe/fssdp_experts.h, docs/moe.md): training runs whose experts are
// owned once and materialised where the tokens are.
//   - With the EP layout as the placement, FSSDP is the EP + ZeRO-1 run bit for bit: losses,
//     parameters and both Adam moments over 10 steps (4 ranks: EP2 x EDP2, two replicas, whose
//     sum is commutative; the gradient norm is summed in another partition: 1e-12).
//   - A skewed router (a fixed selection bias puts every token on experts 0 and 1; the other
//     experts receive nothing in the whole batch) with copies materialised: losses and gradient
//     norms equal the 1-rank run's, every owner's gradient equals the 1-rank gradient (the sum
//     of its copies' partials), Adam state exists once, and the copies are freed after each step.
//     At 8 ranks with 4 experts over EP4 x EDP2 half the ranks own no expert of a layer.
//   - A re-shard moves weights and moments exactly and training continues; checkpoints saved
//     with FSSDP resume exactly, with FSSDP off and another EP size, and the other way round.
#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <cmath>
#include <filesystem>
#include <map>
#include <vector>

#include "base/logging.h"
#include "checkpoint/checkpoint.h"
#include "comm/communicator.h"
#include "layout_equivalence.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

Config fssdp_config(const std::string& name, int world) {
  Config c = small_config(name);
  c.moe.num_experts = 8;
  c.moe.expert_ffn_hidden_size = 16;  // cheap experts: a copy pays for 24 routed rows
  c.training.global_batch_size = 2 * world;
  c.optimizer.grad_clip = 0.0;  // the norm's summation order must not reach the weights
  c.moe.fssdp.max_replicas_per_rank = 2;
  return c;
}

// Every MoE layer's router selects experts 0 and 1 for every token (selection bias only).
void skew(Trainer& t) {
  const int64_t E = t.model().context().config.moe.num_experts;
  std::vector<float> bias(static_cast<size_t>(E), 0.f);
  bias[0] = bias[1] = 10.f;
  auto& m = t.model();
  m.load_buffers([&] {
    std::map<std::string, std::vector<float>> b;
    for (int l = 0; l < m.context().config.model.num_layers; ++l)
      b[fmt::format("layers.{}.moe.router.expert_bias", l)] = bias;
    return b;
  }());
}

Config skewed(Config c) {
  c.moe.router.expert_bias = true;
  c.moe.router.bias_update_rate = 0.0;  // the skew stays
  return c;
}

// name -> [global element] {value, m, v}, NaN where this rank holds nothing.
using Snapshot = std::map<std::string, std::vector<std::array<float, 3>>>;
Snapshot snapshot(Trainer& t) {
  std::vector<float> m, v;
  t.optimizer().gather_state(m, v);
  const ParamStore& ps = t.model().params();
  const float* base = ps.all_values().data();
  Snapshot s;
  for (const Param& p : ps.all()) {
    auto& slot = s[p.spec.name];
    if (slot.empty()) slot.assign(size_t(numel_of(p.spec.global_shape)), {NAN, NAN, NAN});
    const int64_t off = p.value.data() - base;
    for (int64_t i = 0; i < p.value.numel(); ++i)
      slot[size_t(p.spec.global_index(i))] = {p.value.data()[i], m[size_t(off + i)], v[size_t(off + i)]};
  }
  return s;
}

// Every element `a` holds, `b` holds with the same bits.
void expect_bitwise(const Snapshot& a, const Snapshot& b, const std::string& what) {
  int bad = 0;
  for (const auto& [name, elems] : a) {
    auto it = b.find(name);
    ASSERT_NE(it, b.end()) << name;
    for (size_t i = 0; i < elems.size(); ++i) {
      if (std::isnan(elems[i][0])) continue;
      for (int k = 0; k < 3; ++k)
        if (std::bit_cast<uint32_t>(elems[i][size_t(k)]) != std::bit_cast<uint32_t>(it->second[i][size_t(k)]) &&
            bad++ < 5)
          ADD_FAILURE() << what << ": " << name << "[" << i << "] " << "value/m/v"[k] << ": "
                        << elems[i][size_t(k)] << " vs " << it->second[i][size_t(k)];
    }
  }
  EXPECT_EQ(bad, 0);
}

// The owners' experts assembled over the world (each element from exactly one rank: exact).
std::map<std::string, std::vector<double>> owned_experts(Trainer& t, const Communicator& world) {
  std::vector<float> m, v;
  t.optimizer().gather_state(m, v);
  const ParamStore& ps = t.model().params();
  const float* base = ps.all_values().data();
  std::map<std::string, std::vector<double>> out;
  for (const Param& p : ps.all()) {
    if (p.spec.grad_group != GradGroup::expert) continue;
    auto& g = out[p.spec.name];
    const int64_t n = numel_of(p.spec.global_shape);
    if (g.empty()) g.assign(size_t(3 * n), 0.0);
    const int64_t off = p.value.data() - base;
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      const size_t at = size_t(p.spec.global_index(i));
      g[at] = p.value.data()[i], g[size_t(n) + at] = m[size_t(off + i)], g[size_t(2 * n) + at] = v[size_t(off + i)];
    }
  }
  for (auto& [name, g] : out) world.allreduce(std::span<double>(g));
  return out;
}

TEST(Fssdp, EpPlacementIsTheEpZero1RunBitForBit) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  ASSERT_EQ(world->size(), 4) << "EP2 x EDP2";
  Config ep = fssdp_config("fssdp-ep-baseline", 4);
  ep.parallel.expert = 2;
  ep.optimizer.distributed = true;
  Config fs = ep;
  fs.logging.dir += "-fssdp";
  fs.moe.fssdp.enabled = true;
  fs.moe.fssdp.placement = "ep";
  Trainer a(ep, *world), b(fs, *world);
  for (int s = 0; s < 10; ++s) {
    const StepResult ra = a.train_step(), rb = b.train_step();
    EXPECT_EQ(std::bit_cast<uint64_t>(ra.lm_loss), std::bit_cast<uint64_t>(rb.lm_loss)) << "step " << s + 1;
    EXPECT_NEAR(ra.grad_norm, rb.grad_norm, 1e-12 * ra.grad_norm) << "step " << s + 1;
    EXPECT_EQ(rb.fssdp_copies, 16.0) << "8 experts x 2 layers, each once more than its owner";
  }
  expect_bitwise(snapshot(b), snapshot(a), "after 10 steps");
}

// FSSDP with copies against the 1-rank run, both under the same skew.
void expect_skewed_matches_one_rank(Config par, const Communicator& world, const std::string& label) {
  SCOPED_TRACE(label);
  auto solo = world.split(world.rank(), 0, "solo");
  Config ref = par;
  ref.parallel = ParallelConfig{};
  ref.moe.fssdp.enabled = false;
  ref.logging.dir += "-ref";
  Trainer p(par, world), r(ref, *solo);
  skew(p);
  skew(r);
  const int L = int(par.model.num_layers);
  const int64_t per_expert = 3 * par.moe.expert_ffn_hidden_size * par.model.hidden_size;
  for (int s = 0; s < 6; ++s) {
    const StepResult a = p.train_step(), b = r.train_step();
    EXPECT_NEAR(a.lm_loss, b.lm_loss, 1e-5 * b.lm_loss) << "step " << s + 1;
    // Squares summed over ranks in another order, after fp32 drift (as expect_zero1_matches).
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-4 * b.grad_norm) << "step " << s + 1;
    if (s >= 1) EXPECT_GT(a.fssdp_copies, 0.0) << "step " << s + 1 << ": nothing materialised";
    // The owners' gradients after spRS are the whole gradient (ZeRO-1 leaves only each rank's
    // dense shard reduced, so there the losses and norms are the check).
    // Step 3: two AdamW updates of fp32 drift behind them, hence 1e-4 (as the norm above); at
    // 1e-5 the 8-rank case missed by 1.5x on this 2-core AMD EPYC machine (OpenBLAS's kernel
    // choice sets the summation order).
    if (s == 2 && !par.optimizer.distributed)
      expect_same_gradients(p.model().params(), r.model().params(), label, /*zero_ok=*/true,
                            /*rtol=*/1e-4f);
    EXPECT_EQ(p.model().fssdp_copy_bytes(), 0) << "step " << s + 1 << ": copies outlive the step";
  }
  // One optimizer copy of every expert over the whole job.
  const double expert_elems = world.allreduce_scalar(double(p.model().params().count(GradGroup::expert)));
  EXPECT_EQ(expert_elems, double(L * par.moe.num_experts * per_expert));
  std::vector<float> m, v;
  p.optimizer().gather_state(m, v);
  EXPECT_EQ(int64_t(m.size()), p.model().params().count());
}

TEST(Fssdp, SkewedCopiesMatchTheOneRankRun) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  Config c = skewed(fssdp_config("fssdp-skew", world->size()));
  c.moe.fssdp.enabled = true;
  if (world->size() == 8) {  // 4 experts over EP4 x EDP2: ranks 4..7 own none
    c.moe.num_experts = 4;
    c.parallel.expert = 4;
  } else {
    c.parallel.expert = 2;
  }
  expect_skewed_matches_one_rank(c, *world, "adamw");
  c.optimizer.distributed = true;
  c.moe.fssdp.rematerialize = true;
  c.logging.dir += "-zero-rm";
  expect_skewed_matches_one_rank(c, *world, "zero1_rematerialize");
}

// FSSDP composes with the other dimensions (4 ranks): TP2 + SP with EP2, CP2 with EP2, ETP2 x
// EP2 (owner groups of 2 per ETP coordinate), PP2 with EP2 (owner groups within each stage).
TEST(Fssdp, ComposesWithTensorContextExpertTensorAndPipelineParallelism) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  if (world->size() != 4) GTEST_SKIP() << "the layout table is for 4 ranks";
  struct Row {
    const char* name;
    ParallelConfig parallel;
  };
  const Row rows[] = {
      {"tp2_sp_ep2", {.tensor = 2, .expert = 2, .sequence_parallel = true}},
      {"cp2_ep2", {.context = 2, .expert = 2}},
      {"etp2_ep2", {.expert = 2, .expert_tensor = 2}},
      {"pp2_ep2", {.pipeline = 2, .expert = 2}},
  };
  for (const Row& row : rows) {
    Config c = skewed(fssdp_config(std::string("fssdp-compose-") + row.name, 4));
    c.moe.fssdp.enabled = true;
    c.parallel = row.parallel;
    c.training.global_batch_size = 8;
    expect_skewed_matches_one_rank(c, *world, row.name);
  }
}

TEST(Fssdp, ReshardMovesWeightsAndMomentsExactlyAndTrainingContinues) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  Config still = skewed(fssdp_config("fssdp-reshard-still", world->size()));
  still.moe.fssdp.enabled = true;
  still.parallel.expert = 2;
  still.moe.fssdp.reshard_interval = 0;
  Config moves = still;
  moves.logging.dir = still.logging.dir + "-moves";
  moves.moe.fssdp.reshard_interval = 3;
  Trainer a(still, *world), b(moves, *world);
  skew(a);
  skew(b);
  for (int s = 0; s < 3; ++s) {
    const StepResult ra = a.train_step(), rb = b.train_step();
    EXPECT_EQ(ra.lm_loss, rb.lm_loss) << "step " << s + 1 << ": before any re-shard";
    if (s == 2) EXPECT_GT(rb.experts_moved, 0) << "the skewed loads moved no owner";
  }
  // Step 3 ended with b's re-shard: the same experts, weights and moments, at other owners.
  const auto ea = owned_experts(a, *world), eb = owned_experts(b, *world);
  EXPECT_EQ(ea, eb);
  // ... and the owners differ somewhere (the plan buffers).
  const auto ba = a.model().buffers(), bb = b.model().buffers();
  bool moved = false;
  for (int l = 0; l < 2; ++l) {
    const std::string owner = fmt::format("layers.{}.moe.fssdp.owner", l);
    moved |= ba.at(owner) != bb.at(owner);
  }
  EXPECT_TRUE(moved);
  for (int s = 3; s < 8; ++s) {
    const StepResult ra = a.train_step(), rb = b.train_step();
    // Other owners add the copies' partials in another order: fp32 tolerance.
    EXPECT_NEAR(ra.lm_loss, rb.lm_loss, 1e-5 * ra.lm_loss) << "step " << s + 1;
  }
}

std::vector<double> run(Config c, const Communicator& world, int steps, bool skew_it) {
  Trainer t(c, world);
  if (skew_it) skew(t);
  std::vector<double> losses;
  while (t.step() < steps) losses.push_back(t.train_step().lm_loss);
  if (c.checkpoint.save_interval > 0) t.save_checkpoint_now();
  return losses;
}

TEST(Fssdp, CheckpointsResumeWithAndWithoutFssdpUnderOtherEpSizes) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  Config fs = skewed(fssdp_config("fssdp-ckpt", world->size()));
  fs.moe.fssdp.enabled = true;
  fs.moe.fssdp.reshard_interval = 2;  // owners move before the save
  fs.parallel.expert = 2;
  fs.training.train_steps = 8;
  const std::vector<double> whole = run(fs, *world, 8, true);
  // Saved at step 4 with FSSDP (after a re-shard at steps 2 and 4).
  Config first = fs;
  first.logging.dir += "-first";
  first.checkpoint.dir = first.logging.dir + "/ckpt";
  first.checkpoint.save_interval = 4;
  if (world->rank() == 0) std::filesystem::remove_all(first.checkpoint.dir);
  world->barrier();
  run(first, *world, 4, true);
  // The offline tools assemble every expert from the owners' pieces (coverage and checksums
  // checked) and see each once: the owners' boxes tile the tensor.
  const GlobalTensors saved = read_checkpoint_tensors(first.checkpoint.dir);
  EXPECT_EQ(saved.at("layers.1.moe.experts.fc1.weight").first,
            (std::vector<int64_t>{8, 2, fs.moe.expert_ffn_hidden_size, fs.model.hidden_size}));
  // (a) FSSDP again: owners and the load window come back, so the resumed steps are exact.
  Config again = fs;
  again.logging.dir += "-again";
  again.checkpoint.load = first.checkpoint.dir;
  const std::vector<double> resumed = run(again, *world, 8, true);
  ASSERT_EQ(resumed.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(resumed[i], whole[4 + i]) << "step " << 5 + i;
  // (b) FSSDP off, EP = world: the same model, computed elsewhere.
  Config off = fs;
  off.logging.dir += "-off";
  off.moe.fssdp.enabled = false;
  off.parallel.expert = world->size();
  off.checkpoint.load = first.checkpoint.dir;
  const std::vector<double> plain = run(off, *world, 8, true);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(plain[i], whole[4 + i], 1e-5 * whole[4 + i]) << "step " << 5 + i;
  // (c) The other way: saved without FSSDP (EP = world), resumed with it (EP2).
  Config ep_first = off;
  ep_first.logging.dir += "-first";
  ep_first.checkpoint = {.dir = ep_first.logging.dir + "/ckpt", .save_interval = 4};
  if (world->rank() == 0) std::filesystem::remove_all(ep_first.checkpoint.dir);
  world->barrier();
  const std::vector<double> ep_head = run(ep_first, *world, 4, true);
  Config ep_whole = off;
  ep_whole.checkpoint = {};
  ep_whole.logging.dir += "-whole";
  const std::vector<double> ep_all = run(ep_whole, *world, 8, true);
  Config onto = fs;
  onto.logging.dir += "-onto";
  onto.checkpoint.load = ep_first.checkpoint.dir;
  const std::vector<double> on = run(onto, *world, 8, true);
  ASSERT_EQ(on.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(on[i], ep_all[4 + i], 1e-5 * ep_all[4 + i]) << "step " << 5 + i;
}

}  // namespace
}  // namespace origami
