// Checkpoints: a resumed run equals the uninterrupted one bit for bit (same layout, with and
// without ZeRO-1, in fp32 and bf16), a checkpoint loads into other layouts with the same subsequent losses, and
// bad checkpoints are refused with the path and the tensor named, before any weight changes.
#include <gtest/gtest.h>

#include <filesystem>
#include <malloc.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/logging.h"
#include "checkpoint/checkpoint.h"
#include "comm/communicator.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const Communicator& world, const std::string& name) {
  const std::string dir = std::string(ORIGAMI_BINARY_DIR) + "/test-ckpt/" + name;
  if (world.rank() == 0) fs::remove_all(dir);
  world.barrier();
  return dir;
}

std::vector<double> tail(const std::vector<double>& v, size_t from) {
  return std::vector<double>(v.begin() + long(from), v.end());
}

// A resumed run against the uninterrupted one, per (ZeRO-1, training.precision). In bf16 the run
// computes with a bf16 copy of the parameters, so the resume is exact only if the checkpoint
// holds the fp32 masters (docs/precision.md).
struct ResumeCase {
  bool zero;
  const char* precision;
};
class Resume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(Resume, ResumedRunEqualsUninterruptedBitForBit) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  const bool zero = GetParam().zero;
  const std::string precision = GetParam().precision;
  const std::string name = fmt::format("resume-{}-{}-{}", world->size(), zero, precision);
  const std::string dir = fresh_dir(*world, name);
  Config cfg = small_config(name);
  cfg.training.train_steps = 6;
  cfg.training.precision = precision;
  cfg.optimizer.distributed = zero;
  cfg.parallel.expert = world->size();
  const std::vector<double> straight = Trainer(cfg, *world).train();

  Config first = cfg;
  first.training.train_steps = 3;
  first.checkpoint.dir = dir;
  first.checkpoint.save_interval = 3;
  Trainer(first, *world).train();
  Config second = cfg;
  second.checkpoint.load = dir;  // the save directory: `latest` names iter_0000003
  Trainer resumed(second, *world);
  EXPECT_EQ(resumed.step(), 3);
  EXPECT_EQ(resumed.train(), tail(straight, 3));  // exact: same bits in, same bits out
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, Resume,
                         ::testing::Values(ResumeCase{false, "fp32"}, ResumeCase{true, "fp32"},
                                           ResumeCase{false, "bf16"}, ResumeCase{true, "bf16"}),
                         [](const auto& info) {
                           return std::string(info.param.zero ? "Zero1" : "AdamW") +
                                  (std::string(info.param.precision) == "bf16" ? "Bf16" : "");
                         });

// Gating schedules and the auxiliary-loss-free expert bias: the schedule is a function of the
// step (the noise of the dense-to-sparse gate too) and the bias a checkpointed buffer, so a resume
// reproduces the uninterrupted run bit for bit, losses and biases, whether the experts were
// spawned (diversify phase) before or after the checkpoint.
struct RouterResumeCase {
  const char* name;
  void (*apply)(Config&);
};

class RouterResume : public ::testing::TestWithParam<RouterResumeCase> {};

TEST_P(RouterResume, ResumedRunEqualsUninterruptedBitForBit) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  const std::string name = fmt::format("resume-router-{}-{}", GetParam().name, world->size());
  const std::string dir = fresh_dir(*world, name);
  Config cfg = small_config(name);
  cfg.training.train_steps = 6;
  cfg.parallel.expert = std::min(world->size(), 4);
  GetParam().apply(cfg);
  Trainer straight_run(cfg, *world);
  const std::vector<double> straight = straight_run.train();

  Config first = cfg;
  first.training.train_steps = 3;
  first.checkpoint.dir = dir;
  first.checkpoint.save_interval = 3;
  Trainer first_run(first, *world);
  first_run.train();
  const auto saved = read_checkpoint_buffers(dir);
  EXPECT_EQ(saved, first_run.model().buffers());
  EXPECT_EQ(read_checkpoint_info(dir).format_version, saved.empty() ? 1 : 2);
  Config second = cfg;
  second.checkpoint.load = dir;
  Trainer resumed(second, *world);
  EXPECT_EQ(resumed.train(), tail(straight, 3));
  EXPECT_EQ(resumed.model().buffers(), straight_run.model().buffers());
  // The bias moved (the sign rule can bring it back to exactly 0 by an even step, so ask
  // whether it was non-zero at the save or at the end).
  for (const auto& [key, bias] : straight_run.model().buffers()) {
    const std::vector<float> zeros(bias.size(), 0.f);
    EXPECT_TRUE(bias != zeros || saved.at(key) != zeros) << key << " never moved";
  }
}

INSTANTIATE_TEST_SUITE_P(
    CheckpointRouter, RouterResume,
    ::testing::Values(
        RouterResumeCase{"spawn_before_save_dense_to_sparse",
                         [](Config& c) {
                           c.moe.router.schedule.diversify = {.steps = 2, .mask_ratio = 0.3,
                                                              .noise_std = 0.01};
                           c.moe.router.schedule.kind = "dense_to_sparse";
                           c.moe.router.schedule.end_step = 3;
                         }},
        RouterResumeCase{"spawn_after_save_dense_to_sparse",
                         [](Config& c) {
                           c.moe.router.schedule.diversify.steps = 4;
                           c.moe.router.schedule.kind = "dense_to_sparse";
                           c.moe.router.schedule.gumbel_weights = true;
                           c.moe.router.schedule.end_step = 6;
                         }},
        RouterResumeCase{"sigmoid_expert_bias_topk_anneal",
                         [](Config& c) {
                           c.moe.router.score = "sigmoid";
                           c.moe.router.expert_bias = true;
                           c.moe.router.bias_update_rate = 0.01;
                           c.moe.num_experts = 8;
                           c.moe.router.num_groups = 4;
                           c.moe.router.group_topk = 2;
                           c.moe.router.load_balance = "global_batch";
                           c.moe.router.schedule.kind = "topk_anneal";
                           c.moe.router.schedule.k_start = 4;
                           c.moe.router.schedule.end_step = 5;
                           c.moe.top_k = 2;
                         }},
        // SMoE-Dropout: a frozen random router while k grows from 1 to 2.
        RouterResumeCase{"frozen_router_topk_anneal",
                         [](Config& c) {
                           c.moe.router.freeze = true;
                           c.moe.router.aux_loss_coeff = 0.0;
                           c.moe.router.schedule.kind = "topk_anneal";
                           c.moe.router.schedule.k_start = 1;
                           c.moe.router.schedule.end_step = 5;
                           c.moe.top_k = 2;
                         }},
        // The MoE variants (docs/moe.md "Variants"): their parameters, the expert bias over
        // AdaMoE's extra rows, and ZeRO-1's shards of them resume exactly.
        RouterResumeCase{"moepp_zero_compute_zero1",
                         [](Config& c) {
                           c.moe.zero_compute_experts = {.zero = 1, .copy = 1, .constant = 1,
                                                         .balance_weight = 0.5};
                           c.optimizer.distributed = true;
                         }},
        RouterResumeCase{"adamoe_null_experts_expert_bias",
                         [](Config& c) {
                           c.moe.null_experts = 4;
                           c.moe.top_k = 3;
                           c.moe.router.expert_bias = true;
                           c.moe.router.bias_update_rate = 0.01;
                         }},
        RouterResumeCase{"moepp_gating_residual",
                         [](Config& c) { c.moe.router.gating_residual = true; }},
        RouterResumeCase{"rmoe_recurrent_zero1",
                         [](Config& c) {
                           c.moe.router.kind = "recurrent";
                           c.moe.router.recurrent_dim = 16;
                           c.optimizer.distributed = true;
                         }},
        RouterResumeCase{"pyramid_residual",
                         [](Config& c) {
                           c.moe.num_experts_per_layer = {4, 8};
                           c.moe.residual = true;
                           c.moe.top_k = 1;
                         }}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Checkpoint, LoadsIntoOtherLayouts) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  const int W = world->size();
  const std::string dir = fresh_dir(*world, fmt::format("relayout-{}", W));
  // Saved by EP=W experts-over-all-ranks with ZeRO-1 ...
  Config saved = small_config(fmt::format("relayout-{}", W));
  saved.training.train_steps = 6;
  saved.moe.num_experts = std::max(4, W);  // EP = W needs at least W experts
  saved.training.global_batch_size = 8 * std::max(1, W / 4);  // DP = W needs gbs % (2 W) == 0
  saved.parallel.expert = W;
  saved.optimizer.distributed = true;
  saved.checkpoint.dir = dir;
  saved.checkpoint.save_interval = 3;
  saved.checkpoint.keep_last = 1;
  const std::vector<double> uninterrupted = Trainer(saved, *world).train();
  ASSERT_TRUE(fs::exists(dir + "/iter_0000006"));
  ASSERT_FALSE(fs::exists(dir + "/iter_0000003")) << "keep_last 1 keeps only the newest";
  // ... resumed from iteration 3: re-save it (the run above pruned it) by replaying 3 steps.
  Config three = saved;
  three.training.train_steps = 3;
  three.checkpoint.dir = dir + "-3";
  if (world->rank() == 0) fs::remove_all(three.checkpoint.dir);
  world->barrier();
  Trainer(three, *world).train();

  // ... into plain data parallelism with half the expert parallelism and no ZeRO,
  Config other = saved;
  other.parallel.expert = std::max(1, W / 2);
  other.optimizer.distributed = false;
  other.checkpoint = {.dir = "", .save_interval = 0, .keep_last = 1, .load = three.checkpoint.dir};
  other.logging.dir += "-other";
  const std::vector<double> relayout = Trainer(other, *world).train();
  ASSERT_EQ(relayout.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_NEAR(relayout[i], uninterrupted[3 + i], 1e-5 * uninterrupted[3 + i]) << "step " << 4 + i;
  // ... into a quarter of the ranks (8 -> 2 at 8 ranks), expert parallel over them,
  if (W >= 4) {
    const int part = W / 4;
    auto sub = world->split(world->rank() < part ? 0 : 1, world->rank(), "quarter");
    if (world->rank() < part) {
      Config q = other;
      q.parallel.expert = part;
      q.logging.dir += "-quarter";
      const std::vector<double> quarter = Trainer(q, *sub).train();
      for (size_t i = 0; i < 3; ++i)
        EXPECT_NEAR(quarter[i], uninterrupted[3 + i], 1e-5 * uninterrupted[3 + i])
            << W << " -> " << part << " ranks, step " << 4 + i;
    }
    world->barrier();
  }
  // ... and into a single rank.
  auto solo = world->split(world->rank() == 0 ? 0 : 1, world->rank(), "solo");
  if (world->rank() == 0) {
    Config one = other;
    one.parallel.expert = 1;
    one.logging.dir += "-one";
    const std::vector<double> single = Trainer(one, *solo).train();
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(single[i], uninterrupted[3 + i], 1e-5 * uninterrupted[3 + i]) << "step " << 4 + i;
  }
  world->barrier();
}

// Resident memory of this process (/proc/self/status, KiB): "VmRSS" now, "VmHWM" its peak since
// the last reset_peak_rss().
int64_t status_kib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string k;
  int64_t v = 0;
  while (in >> k) {
    if (k == key + ":") {
      in >> v;
      return v;
    }
    std::getline(in, k);
  }
  return -1;
}
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

TEST(Checkpoint, Zero1SaveAndLoadStayWithinABucket) {
  // ZeRO-1 on 4 ranks: a save writes each rank's moment shard in bounded pieces and a load
  // stages a bounded box at a time, so neither raises the peak memory by more than one bucket
  // (the optimizer's 2^20 floats) -- where gathering both moments of every parameter (the old
  // format path) would add 8 bytes per parameter, ~10 MiB here. The checkpoint then continues
  // in a non-ZeRO 1-rank run and a ZeRO 2-rank run with the uninterrupted losses.
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  if (world->size() != 4) GTEST_SKIP() << "a 4-rank test";
  // Every allocation of 128 KiB or more its own mapping, returned on free: the peak resident
  // size then shows the largest set of such buffers alive at once (glibc would otherwise raise
  // the threshold after the first free and serve repeats from memory it keeps).
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  const std::string dir = fresh_dir(*world, "zero1-bucket");
  Config c = small_config("zero1-bucket");
  c.model.hidden_size = 64;  // ~1.3 M parameters per rank: 10 MiB of moments gathered
  c.model.num_attention_heads = 4;
  c.optimizer.distributed = true;
  c.training.train_steps = 6;
  const std::vector<double> whole = Trainer(c, *world).train();
  Config first = c;
  first.training.train_steps = 3;
  first.checkpoint.dir = dir;
  first.logging.dir += "-first";
  Trainer t(first, *world);
  t.train();  // no save_interval: the save below is the measured one
  const int64_t bucket_kib = (int64_t(1) << 20) * 4 / 1024;
  const int64_t params = t.model().params().count();
  ASSERT_GT(params * 8 / 1024, 2 * bucket_kib) << "the model is too small to tell the ways apart";
  // Measured: a second save of the same state (the first one also initialises the HDF5 library
  // and its caches, a fixed cost that does not grow with the model).
  t.save_checkpoint_now();
  reset_peak_rss();
  const int64_t before = status_kib("VmRSS");
  t.save_checkpoint_now();
  const int64_t save_rise = status_kib("VmHWM") - before;
  // The load, into the same optimizer (its moments overwritten by the same values).
  reset_peak_rss();
  const int64_t before_load = status_kib("VmRSS");
  OptimizerMoments moments(t.optimizer());
  load_checkpoint(t.backend(), dir, t.model().params(), moments);
  const int64_t load_rise = status_kib("VmHWM") - before_load;
  if (before < 0 || save_rise < 0) GTEST_SKIP() << "no /proc/self/status peak here";
  EXPECT_LE(save_rise, bucket_kib) << "a save raised the peak by " << save_rise << " KiB";
  EXPECT_LE(load_rise, bucket_kib) << "a load raised the peak by " << load_rise << " KiB";
  std::printf("[rank %d] %lld parameters: save +%lld KiB, load +%lld KiB peak (bucket %lld KiB; a "
              "full gather of both moments: %lld KiB)\n", world->rank(), (long long)params,
              (long long)save_rise, (long long)load_rise, (long long)bucket_kib,
              (long long)(params * 8 / 1024));
  // Into a non-ZeRO single rank and a ZeRO pair of ranks.
  for (const int ranks : {1, 2}) {
    auto sub = world->split(world->rank() / ranks, world->rank(), "part");
    Config next = c;
    next.optimizer.distributed = ranks > 1;
    next.checkpoint.load = dir;
    next.logging.dir += fmt::format("-{}-{}", ranks, world->rank() / ranks);
    const std::vector<double> resumed = Trainer(next, *sub).train();
    ASSERT_EQ(resumed.size(), 3u);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(resumed[i], whole[3 + i], 1e-5 * whole[3 + i]) << ranks << " ranks, step " << 4 + i;
  }
}

TEST(Checkpoint, OneRankCheckpointLoadsOnAllRanks) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  const int W = world->size();
  const std::string dir = fresh_dir(*world, fmt::format("from-one-{}", W));
  Config one = small_config(fmt::format("from-one-{}", W));
  one.training.train_steps = 6;
  one.moe.num_experts = std::max(4, W);
  one.training.global_batch_size = 8 * std::max(1, W / 4);  // DP = W needs gbs % (2 W) == 0
  one.checkpoint.dir = dir;
  one.checkpoint.save_interval = 3;
  std::vector<double> uninterrupted;
  auto solo = world->split(world->rank() == 0 ? 0 : 1, world->rank(), "solo");
  if (world->rank() == 0) uninterrupted = Trainer(one, *solo).train();  // saves at 3 and 6
  world->barrier();
  // 1 -> W ranks, expert parallel over all of them with ZeRO-1, from iteration 3.
  Config all = one;
  all.parallel.expert = W;
  all.optimizer.distributed = true;
  all.checkpoint = {.load = dir + "/iter_0000003"};
  all.logging.dir += "-all";
  const std::vector<double> resumed = Trainer(all, *world).train();
  if (world->rank() == 0)
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(resumed[i], uninterrupted[3 + i], 1e-5 * uninterrupted[3 + i]) << "step " << 4 + i;
}

// Each bad checkpoint: the error names the checkpoint, the tensor or file, and the mismatch.
TEST(Checkpoint, BadCheckpointsAreRefusedBeforeAnyWeightChanges) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");  // each rank works alone in its own dir
  const std::string dir = std::string(ORIGAMI_BINARY_DIR) +
                          fmt::format("/test-ckpt/bad-{}-{}", world->size(), world->rank());
  fs::remove_all(dir);
  Config cfg = small_config(fmt::format("bad-{}-{}", world->size(), world->rank()));
  cfg.training.train_steps = 1;
  cfg.checkpoint.dir = dir;
  cfg.checkpoint.save_interval = 1;
  Trainer(cfg, *solo).train();
  const std::string ckpt = dir + "/iter_0000001";

  auto load_error = [&](const Config& c) -> std::string {
    try {
      Trainer t(c, *solo);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  Config load = cfg;
  load.checkpoint = {.load = dir};
  load.training.train_steps = 2;
  EXPECT_EQ(load_error(load), "");  // the good one loads

  Config more_layers = load;
  more_layers.model.num_layers = 3;
  std::string e = load_error(more_layers);
  EXPECT_NE(e.find(ckpt), std::string::npos) << e;
  EXPECT_NE(e.find("layers.2.attention_norm.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;

  Config wider = load;
  wider.moe.expert_ffn_hidden_size = 64;
  e = load_error(wider);
  EXPECT_NE(e.find("layers.0.moe.experts.fc1.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[4, 2, 48, 32]"), std::string::npos) << e;
  EXPECT_NE(e.find("[4, 2, 64, 32]"), std::string::npos) << e;

  // A version from the future.
  const std::string index_path = ckpt + "/index.json";
  auto index = nlohmann::json::parse(std::ifstream(index_path));
  const auto good_index = index;
  index["format_version"] = 99;
  std::ofstream(index_path) << index.dump();
  e = load_error(load);
  EXPECT_NE(e.find("format version 99"), std::string::npos) << e;
  std::ofstream(index_path) << good_index.dump();

  // A corrupted data file (bytes flipped inside a dataset), then a truncated one.
  const std::string h5 = ckpt + "/rank_00000.h5";
  const auto size = fs::file_size(h5);
  {
    std::fstream f(h5, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(size - 4096));
    const std::string junk(64, '\x5a');
    f.write(junk.data(), std::streamsize(junk.size()));
  }
  e = load_error(load);
  EXPECT_NE(e.find(ckpt), std::string::npos) << e;
  EXPECT_TRUE(e.find("checksum") != std::string::npos || e.find("cannot read") != std::string::npos) << e;
  fs::resize_file(h5, size / 2);
  e = load_error(load);
  EXPECT_NE(e.find("rank_00000.h5"), std::string::npos) << e;

  // Not a checkpoint at all.
  Config nowhere = load;
  nowhere.checkpoint.load = dir + "/does-not-exist";
  e = load_error(nowhere);
  EXPECT_NE(e.find("does-not-exist"), std::string::npos) << e;
}

}  // namespace
}  // namespace origami
