// Layout equivalence for tensor (with sequence), context and data parallelism, folded with
// expert parallelism, with and without activation recomputation: each layout's first-step
// gradients (every parameter, every local element mapped to its global index) and 10-step losses
// equal a 1-rank run of the same config within fp32 tolerance. Plus: vocabulary parallelism never
// materialises the full logits (the allocator's peak), and ZeRO-1 under TP matches too.
#include <gtest/gtest.h>

#include <filesystem>

#include "base/logging.h"
#include "comm/communicator.h"
#include "layout_equivalence.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

struct Layout {
  const char* name;
  int world, tp, cp, ep, experts;
  const char* balance = "micro_batch";
  bool dense_to_sparse = false;  // the Gumbel gate, keyed by global token
};

// The matrix: TP2, TP4 (4 query heads / 2 kv heads: each kv head shared by two ranks),
// CP2, CP4, TP2xCP2, TP2xDP2 with EP4 folded over the same ranks, TP2xCP2xDP2 with EP8.
const Layout kLayouts[] = {
    {"tp2", 2, 2, 1, 1, 4},
    {"cp2", 2, 1, 2, 1, 4},
    {"tp2_ep2_global_balance", 2, 2, 1, 2, 4, "global_batch"},
    {"cp2_sequence_balance_dense_to_sparse", 2, 1, 2, 1, 4, "sequence", true},
    {"tp2_cp2_sequence_balance", 4, 2, 2, 2, 4, "sequence"},
    {"tp4_kv_replicated", 4, 4, 1, 1, 4},
    {"cp4", 4, 1, 4, 1, 4},
    {"tp2_cp2", 4, 2, 2, 1, 4},
    {"tp2_dp2_ep4", 4, 2, 1, 4, 4},
    {"tp2_cp2_dp2_ep8", 8, 2, 2, 8, 8},
};

Config layout_config(const Layout& l, const std::string& recompute, bool parallel) {
  Config c = small_config(std::string(l.name) + "-" + recompute + (parallel ? "" : "-ref"));
  c.training.global_batch_size = 8;
  c.moe.num_experts = l.experts;
  c.moe.router.load_balance = l.balance;
  if (l.dense_to_sparse) {
    c.moe.router.schedule.kind = "dense_to_sparse";
    c.moe.router.schedule.end_step = 8;  // the switch to top-k happens inside the 10 steps
  }
  c.training.recompute = recompute;
  // The parallel run's LM head works in chunks of 12 of its rows (64/CP: uneven, the last one
  // short), the reference's in one piece: chunking and vocabulary parallelism compose.
  c.training.logits_chunk_tokens = parallel ? 12 : 0;
  c.model.num_layers = 3;  // layer 1 dense (layer_freq 2): the dense MLP is tensor parallel too
  c.moe.layer_freq = 2;
  if (parallel) {
    c.parallel.tensor = l.tp;
    c.parallel.context = l.cp;
    c.parallel.expert = l.ep;
    c.parallel.sequence_parallel = l.tp > 1;
  }
  return c;
}

void expect_layouts_match(const std::string& recompute) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");  // every rank alone, for the reference
  int ran = 0;
  for (const Layout& l : kLayouts) {
    if (l.world != world->size()) continue;
    ++ran;
    expect_layout_matches(layout_config(l, recompute, true), layout_config(l, "none", false),
                          *world, *solo, std::string(l.name) + " recompute " + recompute);
  }
  EXPECT_GT(ran, 0) << "no layout for " << world->size() << " ranks";
}

TEST(TensorContextParallel, LayoutsMatchTheSingleRankRun) { expect_layouts_match("none"); }
TEST(TensorContextParallel, SelectiveRecomputeMatchesTheSingleRankRun) {
  expect_layouts_match("selective");
}
TEST(TensorContextParallel, FullRecomputeMatchesTheSingleRankRun) { expect_layouts_match("full"); }

TEST(TensorContextParallel, DistributedOptimizerMatchesTheSingleRankRun) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");
  for (const Layout& l : kLayouts) {
    if (l.world != world->size() || l.tp == 1) continue;
    expect_zero1_matches(layout_config(l, "none", true), layout_config(l, "none", false), *world,
                         *solo, l.name, 4);
  }
}

// Vocabulary parallelism: with a vocabulary large enough that one [tokens, V] fp32 logits tensor
// outweighs everything else a TP rank allocates, the peak stays below that tensor's size, while
// the 1-rank run's peak exceeds it (so the bound is not vacuous). Chunking the LM head's rows
// does the same on one rank.
TEST(TensorContextParallel, NoRankMaterialisesTheFullLogits) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");
  const int tp = world->size();
  auto config = [&](bool parallel) {
    Config c = small_config(std::string("vocab-parallel") + (parallel ? "" : "-ref"));
    c.model.vocab_size = 65536;  // tokenizer ids are < 8192; the rest of the rows are unused
    c.model.tie_embeddings = true;
    c.model.num_layers = 1;
    c.training.micro_batch_size = 8;  // 256 tokens: logits 256 x 65536 x 4 B = 64 MiB
    c.training.global_batch_size = 8;
    if (parallel) c.parallel.tensor = tp, c.parallel.sequence_parallel = true;
    return c;
  };
  const Config par_cfg = config(true), ref_cfg = config(false);
  const double logits_bytes = 4.0 * 256 * 65536;
  Trainer par(par_cfg, *world);
  const StepResult a = par.train_step();
  const double par_peak = double(par.backend().peak_bytes());
  EXPECT_LT(par_peak, logits_bytes) << "TP" << tp << " rank " << world->rank();
  Trainer ref(ref_cfg, *solo);
  const StepResult b = ref.train_step();
  EXPECT_GT(double(ref.backend().peak_bytes()), logits_bytes);
  EXPECT_NEAR(a.lm_loss, b.lm_loss, 1e-5 * b.lm_loss);
  // One rank with the LM head in chunks of 32 rows: [32, 65536] logits at a time, so its peak
  // drops by most of the whole tensor, and the loss is the same.
  Config chunked_cfg = ref_cfg;
  chunked_cfg.training.logits_chunk_tokens = 32;
  chunked_cfg.logging.dir += "-chunked";
  Trainer chunked(chunked_cfg, *solo);
  const StepResult c = chunked.train_step();
  EXPECT_LT(double(chunked.backend().peak_bytes()),
            double(ref.backend().peak_bytes()) - 0.75 * logits_bytes);
  EXPECT_NEAR(c.lm_loss, b.lm_loss, 1e-5 * b.lm_loss);
}

// Checkpoints are boxes in global coordinates: a run saved under TP = W (ZeRO-1; at W = 4 the kv
// heads are shared by two ranks and indexed once) resumes under CP = W, and its 3 remaining
// losses equal the uninterrupted TP run's.
TEST(TensorContextParallel, CheckpointsMoveBetweenTensorAndContextParallelLayouts) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  const int W = world->size();
  if (W > 4) GTEST_SKIP() << "the test model has 4 heads: TP <= 4";
  const std::string dir = std::string(ORIGAMI_BINARY_DIR) + "/test-ckpt/tp-to-cp-" + std::to_string(W);
  if (world->rank() == 0) std::filesystem::remove_all(dir);
  world->barrier();
  Config tp = small_config("ckpt-tp" + std::to_string(W));
  tp.training.train_steps = 6;
  tp.training.global_batch_size = 4;
  tp.parallel.tensor = W;
  tp.parallel.sequence_parallel = true;
  tp.optimizer.distributed = true;
  const std::vector<double> uninterrupted = Trainer(tp, *world).train();
  Config three = tp;
  three.training.train_steps = 3;
  three.checkpoint.dir = dir;
  three.checkpoint.save_interval = 3;
  three.logging.dir += "-3";
  Trainer(three, *world).train();
  Config cp = tp;
  cp.parallel.tensor = 1;
  cp.parallel.sequence_parallel = false;
  cp.parallel.context = W;
  cp.optimizer.distributed = false;
  cp.checkpoint.load = dir;
  cp.logging.dir = tp.logging.dir + "-cp";
  const std::vector<double> resumed = Trainer(cp, *world).train();
  ASSERT_EQ(resumed.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_NEAR(resumed[i], uninterrupted[3 + i], 1e-5 * uninterrupted[3 + i]) << "step " << 4 + i;
}

}  // namespace
}  // namespace origami
