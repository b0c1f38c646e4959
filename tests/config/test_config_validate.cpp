// Tests of validate(): cross-field rules against the world size. Each message names the config
// file, the keys involved with the line (or --set) each came from, and what would be allowed;
// features not built yet are refused by name.
#include <gtest/gtest.h>

#include "config/config.h"
#include "error_matchers.h"

namespace origami {
namespace {

Config parse(const std::string& text) { return parse_config(text, "runs/cfg.yaml"); }

TEST(ConfigValidate, DefaultsAreValidOnEveryDataParallelWorld) {
  for (int world : {1, 2, 4, 8}) EXPECT_NO_THROW(validate(Config{}, world)) << world;
  EXPECT_NO_THROW(validate(parse("training:\n  backend: cuda\n"), 1));  // checked by the backend
}

TEST(ConfigValidate, ModelParallelProductMustDivideWorld) {
  Config c = parse("parallel:\n  tensor: 2\n  context: 1\n  pipeline: 2\n");
  EXPECT_ERROR_HAS(
      validate(c, 6),
      {"runs/cfg.yaml: config is not valid for 6 rank(s)", "parallel.tensor=2 (runs/cfg.yaml:2)",
       "parallel.context=1 (runs/cfg.yaml:3)", "parallel.pipeline=2 (runs/cfg.yaml:4)",
       "= 4 does not divide the world size 6"});
}

TEST(ConfigValidate, HugeSizesDoNotOverflow) {
  Config c = parse("parallel:\n  tensor: 1099511627776\n  context: 1099511627776\n");
  EXPECT_ERROR_HAS(validate(c, 8), {"parallel.tensor=1099511627776 (runs/cfg.yaml:2)",
                                    "does not divide the world size 8"});
}

TEST(ConfigValidate, ExpertGridMustDivideStage) {
  Config c = parse("moe:\n  num_experts: 6\nparallel:\n  expert: 3\n");
  EXPECT_ERROR_HAS(validate(c, 4),
                   {"parallel.expert=3 (runs/cfg.yaml:4)", "parallel.expert_tensor=1 (default)",
                    "does not divide the 4 ranks of a pipeline stage"});
  Config odd = parse("moe:\n  num_experts: 6\nparallel:\n  expert: 4\n");
  EXPECT_ERROR_HAS(validate(odd, 4), {"moe.num_experts=6 (runs/cfg.yaml:2)",
                                      "is not divisible by parallel.expert=4 (runs/cfg.yaml:4)"});
}

TEST(ConfigValidate, GlobalBatchMustSplitIntoMicroBatchesPerDataRank) {
  Config c = parse("training:\n  micro_batch_size: 2\n  global_batch_size: 12\n");
  EXPECT_NO_THROW(validate(c, 2));
  EXPECT_ERROR_HAS(validate(c, 4),
                   {"runs/cfg.yaml", "training.global_batch_size=12 (runs/cfg.yaml:3)",
                    "training.micro_batch_size=2 (runs/cfg.yaml:2)", "data-parallel size 4",
                    "allowed: a multiple of 8"});
}

TEST(ConfigValidate, ModelShapes) {
  EXPECT_ERROR_HAS(validate(parse("model:\n  hidden_size: 100\n  num_attention_heads: 3\n"), 1),
                   {"model.hidden_size=100 (runs/cfg.yaml:2)", "not divisible by",
                    "model.num_attention_heads=3 (runs/cfg.yaml:3)"});
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_attention_heads: 4\n  num_query_groups: 3\n"), 1),
                   {"model.num_attention_heads=4", "model.num_query_groups=3 (runs/cfg.yaml:3)"});
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  hidden_size: 12\n  num_attention_heads: 4\n"), 1),
      {"head dimension", "= 3 is odd", "RoPE", "model.hidden_size=12 (runs/cfg.yaml:2)"});
  EXPECT_ERROR_HAS(validate(parse("training:\n  seq_length: 512\n"), 1),
                   {"training.seq_length=512 (runs/cfg.yaml:2)",
                    "model.max_seq_length=256 (default)", "allowed: <= 256"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  num_experts: 2\n  top_k: 3\n"), 1),
                   {"moe.top_k=3 (runs/cfg.yaml:3)", "moe.num_experts=2 (runs/cfg.yaml:2)"});
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 3\nparallel:\n  pipeline: 2\n"), 2),
      {"model.num_layers=3 (runs/cfg.yaml:2)", "parallel.pipeline=2 (runs/cfg.yaml:4)"});
}

TEST(ConfigValidate, TrainingAndOptimizerRules) {
  EXPECT_ERROR_HAS(
      validate(parse("optimizer:\n  lr: 1e-4\n  min_lr: 1e-3\n"), 1),
      {"optimizer.min_lr=0.001 (runs/cfg.yaml:3)", "optimizer.lr=0.0001 (runs/cfg.yaml:2)"});
  EXPECT_ERROR_HAS(
      validate(parse("training:\n  eval_interval: 10\ndata:\n  split: [1, 0, 0]\n"), 1),
      {"training.eval_interval=10 (runs/cfg.yaml:2)", "validation split", "runs/cfg.yaml:4"});
  EXPECT_ERROR_HAS(validate(parse("training:\n  precision: bf16\n"), 1),
                   {"training.precision=bf16 (runs/cfg.yaml:2)", "training.backend=cpu (default)"});
}

TEST(ConfigValidate, FeaturesNotBuiltYetAreRefusedByName) {
  struct Case {
    std::string yaml, key, feature;
  };
  for (const Case& k : std::vector<Case>{
           {"parallel:\n  pipeline: 2\n", "parallel.pipeline=2", "pipeline parallelism"},
           {"parallel:\n  virtual_pipeline: 2\n", "parallel.virtual_pipeline=2", "interleaved"},
}) {
    EXPECT_ERROR_HAS(validate(parse(k.yaml), 4), {"runs/cfg.yaml", k.key + " (runs/cfg.yaml:2)",
                                                  k.feature, "not implemented yet"});
  }
}

TEST(ConfigValidate, TensorAndContextParallelConstraints) {
  // Accepted: TP2 x CP2 with sequence parallelism and full recomputation.
  EXPECT_NO_THROW(validate(parse("parallel:\n  tensor: 2\n  context: 2\n  sequence_parallel: "
                                 "true\ntraining:\n  recompute: full\n"), 4));
  EXPECT_ERROR_HAS(validate(parse("parallel:\n  tensor: 2\n"), 2),
                   {"parallel.tensor=2 (runs/cfg.yaml:2) needs parallel.sequence_parallel: true"});
  EXPECT_ERROR_HAS(validate(parse("model:\n  vocab_size: 8191\nparallel:\n  tensor: 2\n"
                                  "  sequence_parallel: true\n"), 2),
                   {"model.vocab_size=8191 (runs/cfg.yaml:2) is not divisible by parallel.tensor=2",
                    "pad the vocabulary"});
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_attention_heads: 12\n  num_query_groups: 4\n"
                                  "parallel:\n  tensor: 3\n  sequence_parallel: true\n"), 3),
                   {"model.num_query_groups=4 (runs/cfg.yaml:3) and parallel.tensor=3",
                    "one must divide the other"});
  EXPECT_ERROR_HAS(validate(parse("training:\n  seq_length: 100\nparallel:\n  context: 4\n"), 4),
                   {"training.seq_length=100 (runs/cfg.yaml:2) is not divisible by 2 × "
                    "parallel.context=4"});
  // Sequence balance and the dense-to-sparse gate work on sequences split over ranks.
  EXPECT_NO_THROW(validate(parse("moe:\n  router:\n    load_balance: sequence\n    schedule: "
                                 "{kind: dense_to_sparse}\nparallel:\n  context: 2\n"), 2));
}

TEST(ConfigValidate, ExpertParallelLayoutsAndCapacityAreAccepted) {
  // 8 ranks: EP4 x ETP2 over 8 experts with capacity routing.
  Config c = parse("moe:\n  num_experts: 8\n  capacity_factor: 1.25\nparallel:\n  expert: 4\n"
                   "  expert_tensor: 2\n");
  EXPECT_NO_THROW(validate(c, 8));
  c.parallel.expert = 3;  // 8 experts do not split over 3 ranks, nor 3 x 2 over 8
  EXPECT_ERROR_HAS(validate(c, 8), {"parallel.expert"});
}

TEST(ConfigValidate, OverridesAreNamedAsTheSourceOfAKey) {
  Config c = parse("moe:\n  top_k: 2\n");
  apply_override(c, "parallel.tensor=3");
  EXPECT_ERROR_HAS(validate(c, 4), {"parallel.tensor=3 (--set parallel.tensor=3)",
                                    "does not divide the world size 4"});
}

TEST(ConfigValidate, ReportsEveryProblemAtOnce) {
  Config c = parse("parallel:\n  tensor: 3\ntraining:\n  global_batch_size: 3\n");
  std::string msg = testing::error_of([&] { validate(c, 2); });
  EXPECT_TRUE(testing::has_all(
      msg, {"does not divide the world size 2", "parallel.tensor=3 (runs/cfg.yaml:2) needs "
            "parallel.sequence_parallel: true"}));
  Config batch = parse("training:\n  global_batch_size: 3\n");
  EXPECT_ERROR_HAS(validate(batch, 2), {"training.global_batch_size=3 (runs/cfg.yaml:2)"});
}

TEST(ConfigValidate, RouterOptionsAndSchedules) {
  // Accepted: DeepSeek-V3 style (sigmoid, bias, groups, scaling) and each schedule.
  EXPECT_NO_THROW(validate(parse("moe:\n  num_experts: 8\n  top_k: 4\n  router:\n"
                                 "    score: sigmoid\n    scaling_factor: 2.5\n"
                                 "    num_groups: 4\n    group_topk: 2\n    expert_bias: true\n"),
                           2));
  EXPECT_NO_THROW(validate(parse("moe:\n  router:\n    schedule: {kind: dense_to_sparse, "
                                 "diversify: {steps: 10}}\n"), 1));
  EXPECT_NO_THROW(validate(parse("moe:\n  router:\n    schedule: {kind: topk_anneal, "
                                 "k_start: 8}\n"), 1));
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    score: sigmoid\n    pre_softmax: false\n"), 1),
                   {"moe.router.pre_softmax=false (runs/cfg.yaml:4)", "softmax scores only",
                    "moe.router.score=sigmoid (runs/cfg.yaml:3)"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    pre_softmax: false\n    renormalize: false\n"), 1),
                   {"moe.router.renormalize=false (runs/cfg.yaml:4)", "would be ignored"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    num_groups: 3\n    group_topk: 1\n"), 1),
                   {"moe.num_experts=8 (default) is not divisible by moe.router.num_groups=3"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    num_groups: 4\n"), 1),
                   {"moe.router.group_topk=0 (default)", ">= 1"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  top_k: 4\n  router:\n    num_groups: 4\n    group_topk: 1\n"), 1),
                   {"moe.top_k=4 (runs/cfg.yaml:2) must lie between", "and 2"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    num_groups: 4\n    group_topk: 1\n"
                                  "    schedule: {kind: dense_to_sparse}\n"), 1),
                   {"moe.router.schedule.kind=dense_to_sparse", "cannot be group-limited"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    expert_bias: true\n"
                                  "    schedule: {kind: dense_to_sparse}\n"), 1),
                   {"moe.router.expert_bias=true (runs/cfg.yaml:3)", "Gumbel"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    schedule: {kind: topk_anneal, k_start: 9}\n"), 1),
                   {"moe.router.schedule.k_start=9", "exceeds moe.num_experts=8"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    schedule: {start_step: 10, end_step: 5}\n"), 1),
                   {"moe.router.schedule.end_step=5", "is before moe.router.schedule.start_step=10"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  capacity_factor: 1.25\n  router:\n"
                                  "    schedule: {kind: topk_anneal}\n"), 1),
                   {"needs dropless routing", "moe.capacity_factor=1.25 (runs/cfg.yaml:2)"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  capacity_factor: 1.25\n  router:\n"
                                  "    schedule: {diversify: {steps: 5}}\n"), 1),
                   {"moe.router.schedule.diversify.steps=5", "needs dropless routing"});
  // A dense model ignores the router section.
  EXPECT_NO_THROW(validate(parse("moe:\n  num_experts: 0\n  router:\n    num_groups: 3\n"), 1));
}

}  // namespace
}  // namespace origami
