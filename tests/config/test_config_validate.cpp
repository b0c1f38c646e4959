// Tests of validate(): cross-field rules against the world size. Each message names the config
// file, the keys involved with the line (or --set) each came from, and what would be allowed;
// features not built yet are refused by name.
#include <fmt/format.h>
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
  // bf16 runs on the cpu too (the bf16 reference); an unknown precision names the allowed ones.
  EXPECT_NO_THROW(validate(parse("training:\n  precision: bf16\n"), 1));
  EXPECT_ERROR_HAS(parse("training:\n  precision: fp16\n"),
                   {"training.precision", "runs/cfg.yaml:2", "bf16"});
}

TEST(ConfigValidate, PipelineConfigsValidate) {
  // Pipeline parallelism trains (issue 15): these validate; virtual stages need several stages.
  for (const char* yaml : {"parallel:\n  pipeline: 2\n", "parallel:\n  pipeline_schedule: gpipe\n",
                           "parallel:\n  pipeline: 2\n  virtual_pipeline: 2\n"})
    EXPECT_NO_THROW(validate(parse(yaml), 4)) << yaml;
  EXPECT_ERROR_HAS(validate(parse("parallel:\n  virtual_pipeline: 2\n"), 4),
                   {"parallel.virtual_pipeline=2 (runs/cfg.yaml:2) needs parallel.pipeline > 1",
                    "parallel.pipeline=1 (default)"});
}

// The pipeline keys (issue 15): each bad split, schedule or micro-batch count is its own error
// naming the keys with their lines and what would work.
std::vector<std::string> problems_of(const Config& c, int world) {
  std::string msg = testing::error_of([&] { validate(c, world); });
  std::vector<std::string> out;
  for (size_t at = msg.find("\n  - "); at != std::string::npos;) {
    const size_t next = msg.find("\n  - ", at + 1);
    out.push_back(msg.substr(at + 5, next == std::string::npos ? next : next - at - 5));
    at = next;
  }
  return out;
}

// A valid pipeline config: no problem at all.
void expect_valid(const std::string& yaml, int world) {
  EXPECT_TRUE(problems_of(parse(yaml), world).empty()) << yaml;
}

TEST(ConfigValidatePipeline, SplitThatDoesNotAddUp) {
  // Megatron once built 28 of 30 layers: 30 over PP4 is refused with the counts that would work.
  const std::vector<std::string> problems =
      problems_of(parse("model:\n  num_layers: 30\nparallel:\n  pipeline: 4\n"), 4);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(testing::has_all(
      problems[0],
      {"the pipeline layer split of model.num_layers=30 (runs/cfg.yaml:2)",
       "parallel.pipeline=4 (runs/cfg.yaml:4)", "parallel.virtual_pipeline=1 (default)",
       "model.num_layers=30 is not divisible by parallel.pipeline=4",
       "allowed: num_layers 28 or 32",
       "or an uneven split such as parallel.pipeline_first_stage_layers=6 (then 8 per other "
       "rank)"}));
  // First and last counts that leave the middle ranks an unequal share.
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 30\nparallel:\n  pipeline: 4\n"
                     "  pipeline_first_stage_layers: 5\n  pipeline_last_stage_layers: 6\n"),
               4),
      {"runs/cfg.yaml: config is not valid for 4 rank(s)",
       "model.num_layers=30 (runs/cfg.yaml:2)", "parallel.pipeline=4 (runs/cfg.yaml:4)",
       "parallel.pipeline_first_stage_layers=5 (runs/cfg.yaml:5)",
       "parallel.pipeline_last_stage_layers=6 (runs/cfg.yaml:6)",
       "leave 19 of model.num_layers=30 for the other 2 rank(s)",
       "the counts must add up exactly to model.num_layers"});
  // With two stages both ends are set, and must place every layer.
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 30\nparallel:\n  pipeline: 2\n"
                     "  pipeline_first_stage_layers: 14\n  pipeline_last_stage_layers: 14\n"),
               2),
      {"parallel.pipeline_first_stage_layers=14 (runs/cfg.yaml:5)",
       "place 28 layers but model.num_layers=30", "add up exactly"});
  // The same 30 layers split 6 + 9 + 9 + 6 are fine: only the refusal remains.
  expect_valid("model:\n  num_layers: 30\nparallel:\n  pipeline: 4\n"
                      "  pipeline_first_stage_layers: 6\n  pipeline_last_stage_layers: 6\n", 4);
  expect_valid("model:\n  num_layers: 30\nparallel:\n  pipeline: 4\n"
                      "  pipeline_first_stage_layers: 6\n", 4);
}

TEST(ConfigValidatePipeline, VirtualPipelineMustDivideEveryRanksLayers) {
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 12\nparallel:\n  pipeline: 2\n"
                     "  virtual_pipeline: 4\n"),
               2),
      {"the pipeline layer split of model.num_layers=12 (runs/cfg.yaml:2)",
       "parallel.virtual_pipeline=4 (runs/cfg.yaml:5)",
       "parallel.virtual_pipeline=4 does not divide the 6 layers of pipeline rank 0",
       "allowed: a virtual_pipeline that divides 6"});
  // An uneven first rank must split into the chunks too.
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 12\nparallel:\n  pipeline: 2\n"
                     "  virtual_pipeline: 2\n  pipeline_first_stage_layers: 5\n"),
               2),
      {"parallel.pipeline_first_stage_layers=5 (runs/cfg.yaml:6)",
       "does not divide the 5 layers of pipeline rank 0", "allowed: a virtual_pipeline that "
       "divides 5"});
  // One stage with chunks: refused (nothing to interleave), whatever the split.
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 3\nparallel:\n  virtual_pipeline: 2\n"), 1),
      {"parallel.virtual_pipeline=2 (runs/cfg.yaml:4) needs parallel.pipeline > 1"});
}

TEST(ConfigValidatePipeline, MoreStagesThanLayers) {
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_layers: 4\nparallel:\n  pipeline: 8\n"), 8),
                   {"model.num_layers=4 (runs/cfg.yaml:2)", "parallel.pipeline=8 (runs/cfg.yaml:4)",
                    "parallel.pipeline=8 is larger than model.num_layers=4",
                    "allowed: parallel.pipeline <= 4"});
  // Sizes beyond int are refused, not wrapped.
  EXPECT_ERROR_HAS(validate(parse("parallel:\n  pipeline: 1099511627776\n"), 8),
                   {"parallel.pipeline=1099511627776 (runs/cfg.yaml:2) is larger than "
                    "model.num_layers=4 (default)",
                    "allowed: parallel.pipeline <= 4"});
}

TEST(ConfigValidatePipeline, InterleavedMicroBatchCountTheScheduleCannotRun) {
  // PP4 v2 with m = 7: Megatron's rule m % g == 0 or m % g >= pp (g = pp = 4) fails; the error
  // names the keys, the count and the counts (and global batch sizes) that would work.
  const std::string yaml =
      "model:\n  num_layers: 8\nparallel:\n  pipeline: 4\n  virtual_pipeline: 2\n"
      "training:\n  micro_batch_size: 1\n  global_batch_size: 7\n";
  const std::vector<std::string> problems = problems_of(parse(yaml), 4);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(testing::has_all(
      problems[0],
      {"parallel.pipeline_schedule=interleaved (default with virtual_pipeline > 1)",
       "parallel.pipeline=4 (runs/cfg.yaml:4)", "parallel.virtual_pipeline=2 (runs/cfg.yaml:5)",
       "training.global_batch_size=7 (runs/cfg.yaml:8)",
       "training.micro_batch_size=1 (runs/cfg.yaml:7)", "(data-parallel size 1)",
       "cannot run 7 micro-batches per step",
       "7 % 4 = 3 leaves a last group smaller than the pipeline", "nearest that work: 4 or 8",
       "allowed: training.global_batch_size 4 or 8 (4 or 8 micro-batches per step)"}));
  // With DP2 the same 7 micro-batches come from a global batch of 14; the sizes that work double.
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 8\nparallel:\n  pipeline: 4\n  virtual_pipeline: 2\n"
                     "training:\n  micro_batch_size: 1\n  global_batch_size: 14\n"),
               8),
      {"training.global_batch_size=14 (runs/cfg.yaml:8)", "(data-parallel size 2)",
       "cannot run 7 micro-batches", "allowed: training.global_batch_size 8 or 16"});
  // Fewer micro-batches than one group: only counts above work.
  EXPECT_ERROR_HAS(
      validate(parse("model:\n  num_layers: 8\nparallel:\n  pipeline: 4\n  virtual_pipeline: 2\n"
                     "training:\n  micro_batch_size: 1\n  global_batch_size: 3\n"),
               4),
      {"cannot run 3 micro-batch(es) per step", "at least the group size 4",
       "allowed: training.global_batch_size 4 (4 micro-batches per step)"});
  // m = 8 runs.
  expect_valid("model:\n  num_layers: 8\nparallel:\n  pipeline: 4\n  virtual_pipeline: 2\n"
                      "training:\n  micro_batch_size: 1\n  global_batch_size: 8\n", 4);
  // gpipe runs any count with any v; 1f1b any count with v = 1.
  expect_valid("model:\n  num_layers: 8\nparallel:\n  pipeline: 4\n  virtual_pipeline: 2\n"
                      "  pipeline_schedule: gpipe\ntraining:\n  micro_batch_size: 1\n"
                      "  global_batch_size: 7\n", 4);
  expect_valid("model:\n  num_layers: 8\nparallel:\n  pipeline: 4\n"
                      "training:\n  micro_batch_size: 1\n  global_batch_size: 7\n", 4);
}

TEST(ConfigValidatePipeline, OneFOneBWithVirtualStagesNamesBothKeys) {
  const std::string msg = testing::error_of([] {
    validate(parse("parallel:\n  pipeline: 2\n  virtual_pipeline: 2\n  pipeline_schedule: 1f1b\n"),
             2);
  });
  EXPECT_TRUE(testing::has_all(
      msg, {"parallel.pipeline_schedule=1f1b (runs/cfg.yaml:4)",
            "parallel.virtual_pipeline=2 (runs/cfg.yaml:3)",
            "parallel.pipeline_schedule=1f1b runs one chunk per rank",
            "allowed: interleaved (or gpipe) with virtual_pipeline > 1, 1f1b with 1"}));
  // No micro-batch count would help, so the error is not about the count.
  EXPECT_EQ(msg.find("micro-batch"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("training.global_batch_size"), std::string::npos) << msg;
  // The same by --set.
  Config c = parse("parallel:\n  pipeline: 2\n  virtual_pipeline: 2\n");
  apply_override(c, "parallel.pipeline_schedule=1f1b");
  EXPECT_ERROR_HAS(validate(c, 2),
                   {"parallel.pipeline_schedule=1f1b (--set parallel.pipeline_schedule=1f1b)",
                    "runs one chunk per rank"});
  // An explicit interleaved with one chunk is refused the same way.
  EXPECT_ERROR_HAS(validate(parse("parallel:\n  pipeline: 2\n  pipeline_schedule: interleaved\n"),
                            2),
                   {"parallel.pipeline_schedule=interleaved (runs/cfg.yaml:3)",
                    "needs parallel.virtual_pipeline > 1", "allowed: 1f1b or gpipe"});
}

TEST(ConfigValidatePipeline, FirstAndLastNeedSeveralStages) {
  for (int first : {2, 4}) {  // 4 = model.num_layers: still no first rank to set apart
    EXPECT_ERROR_HAS(validate(parse(fmt::format("parallel:\n  pipeline_first_stage_layers: {}\n",
                                                first)),
                              1),
                     {fmt::format("parallel.pipeline_first_stage_layers={} (runs/cfg.yaml:2)",
                                  first),
                      "parallel.pipeline_last_stage_layers=0 (default)",
                      "parallel.pipeline=1 (default) has one stage holding all 4 layers",
                      "allowed: 0 (the default) with parallel.pipeline=1, or "
                      "parallel.pipeline > 1"});
  }
  EXPECT_ERROR_HAS(
      validate(parse("parallel:\n  pipeline: 1\n  pipeline_last_stage_layers: 1\n"), 2),
      {"parallel.pipeline_last_stage_layers=1 (runs/cfg.yaml:3)",
       "parallel.pipeline=1 (runs/cfg.yaml:2) has one stage"});
}

TEST(ConfigValidatePipeline, UnknownScheduleValue) {
  // The loader refuses it with the line; a Config built in code is caught by validate().
  EXPECT_ERROR_HAS(parse("parallel:\n  pipeline_schedule: zero_bubble\n"),
                   {"runs/cfg.yaml:2", "parallel.pipeline_schedule", "'zero_bubble'",
                    "allowed: 1f1b, interleaved, gpipe"});
  Config c;
  c.parallel.pipeline_schedule = "dualpipe";
  EXPECT_ERROR_HAS(validate(c, 1), {"parallel.pipeline_schedule=dualpipe (default)",
                                    "'dualpipe'", "allowed: 1f1b, interleaved, gpipe"});
}

TEST(ConfigValidatePipeline, ValidPipelineConfigsValidate) {
  // PP2 with tied embeddings (allowed with PP: the last stage holds a copy), PP2 x DP2, an
  // interleaved PP4 v2 with m = 8, gpipe with v = 2.
  expect_valid("model:\n  tie_embeddings: true\nparallel:\n  pipeline: 2\n", 2);
  expect_valid("parallel:\n  pipeline: 2\n", 4);
  expect_valid("model:\n  num_layers: 8\nparallel:\n  pipeline: 4\n  virtual_pipeline: 2\n", 4);
  expect_valid(
      "parallel:\n  pipeline: 2\n  virtual_pipeline: 2\n  pipeline_schedule: gpipe\n", 2);
}

TEST(ConfigValidate, AFrozenRouterTakesNoBalanceLoss) {
  // SMoE-Dropout's frozen router: a balance loss could not train it, only push the layer input.
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    freeze: true\n"), 1),
                   {"moe.router.freeze=true (runs/cfg.yaml:3)",
                    "moe.router.load_balance=micro_batch (default)",
                    "moe.router.aux_loss_coeff=0.01 (default)",
                    "allowed: load_balance none or aux_loss_coeff 0 with a frozen router"});
  EXPECT_NO_THROW(validate(parse("moe:\n  router:\n    freeze: true\n    aux_loss_coeff: 0\n"), 1));
  EXPECT_NO_THROW(validate(parse("moe:\n  router:\n    freeze: true\n    load_balance: none\n"), 1));
}

TEST(ConfigValidate, FssdpRefusesWhatItCannotServe) {
  // Keys out of range are refused by the schema with the file line.
  EXPECT_ERROR_HAS(parse("moe:\n  fssdp:\n    max_replicas_per_rank: -1\n"),
                   {"runs/cfg.yaml:3", "moe.fssdp.max_replicas_per_rank"});
  EXPECT_ERROR_HAS(parse("moe:\n  fssdp:\n    load_window: 0\n"),
                   {"runs/cfg.yaml:3", "moe.fssdp.load_window"});
  EXPECT_ERROR_HAS(parse("moe:\n  fssdp:\n    placement: random\n"),
                   {"runs/cfg.yaml:3", "moe.fssdp.placement", "planned", "ep"});
  // One owner rank per stage: nothing to shard.
  EXPECT_ERROR_HAS(validate(parse("moe:\n  fssdp:\n    enabled: true\n"), 1),
                   {"moe.fssdp.enabled=true (runs/cfg.yaml:3)", "one", "expert_tensor"});
  EXPECT_ERROR_HAS(
      validate(parse("moe:\n  fssdp:\n    enabled: true\nparallel:\n  expert_tensor: 2\n"), 2),
      {"moe.fssdp.enabled=true", "parallel.expert_tensor=2 (runs/cfg.yaml:5)"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  num_experts: 0\n  fssdp:\n    enabled: true\n"), 2),
                   {"moe.fssdp.enabled=true", "moe.num_experts=0 (runs/cfg.yaml:2)"});
  EXPECT_ERROR_HAS(
      validate(parse("moe:\n  fssdp:\n    enabled: true\n  router:\n    schedule:\n"
                     "      diversify:\n        steps: 5\n"), 2),
      {"moe.fssdp.enabled=true", "moe.router.schedule.diversify.steps=5 (runs/cfg.yaml:7)"});
  EXPECT_NO_THROW(validate(parse("moe:\n  fssdp:\n    enabled: true\n"), 2));
  EXPECT_NO_THROW(
      validate(parse("moe:\n  fssdp:\n    enabled: true\nparallel:\n  expert: 2\n"), 8));
}

TEST(ConfigValidate, MoeVariantsRefuseWhatTheyCannotServe) {
  EXPECT_ERROR_HAS(parse("moe:\n  null_experts: -2\n"), {"runs/cfg.yaml:2", "moe.null_experts"});
  EXPECT_ERROR_HAS(parse("moe:\n  router:\n    kind: lstm\n"),
                   {"runs/cfg.yaml:3", "moe.router.kind", "linear", "recurrent"});
  // Capacity counts FFN experts only: a config error naming both keys.
  EXPECT_ERROR_HAS(validate(parse("moe:\n  capacity_factor: 1.25\n  null_experts: 4\n"), 1),
                   {"moe.null_experts=4 (runs/cfg.yaml:3)",
                    "moe.capacity_factor=1.25 (runs/cfg.yaml:2)"});
  EXPECT_ERROR_HAS(
      validate(parse("moe:\n  capacity_factor: 1.0\n  zero_compute_experts:\n    copy: 1\n"), 1),
      {"moe.zero_compute_experts.copy=1 (runs/cfg.yaml:4)", "moe.capacity_factor=1"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  null_experts: 2\n  router:\n    num_groups: 2\n"
                                  "    group_topk: 1\n"), 1),
                   {"moe.null_experts=2 (runs/cfg.yaml:2)", "moe.router.num_groups=2 (runs/cfg.yaml:4)"});
  // A variant of the MoE layer in a dense model.
  EXPECT_ERROR_HAS(validate(parse("moe:\n  num_experts: 0\n  residual: true\n"), 1),
                   {"moe.residual=true (runs/cfg.yaml:3)", "moe.num_experts=0 (runs/cfg.yaml:2)"});
  // k may exceed the FFN experts (AdaMoE raises it) but not the router's rows.
  EXPECT_NO_THROW(validate(parse("moe:\n  num_experts: 4\n  top_k: 6\n  null_experts: 4\n"), 1));
  EXPECT_ERROR_HAS(validate(parse("moe:\n  num_experts: 4\n  top_k: 9\n  null_experts: 4\n"), 1),
                   {"moe.top_k=9 (runs/cfg.yaml:3)", "8 rows"});
  EXPECT_NO_THROW(validate(parse("moe:\n  zero_compute_experts:\n    zero: 1\n    copy: 1\n"
                                 "    constant: 2\n    balance_weight: 0.75\n  residual: true\n"),
                           1));
  // The cross-layer routers.
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    kind: recurrent\n    gating_residual: true\n"), 1),
                   {"moe.router.kind=recurrent (runs/cfg.yaml:3)",
                    "moe.router.gating_residual=true (runs/cfg.yaml:4)"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    gating_residual: true\n    schedule:\n"
                                  "      diversify:\n        steps: 3\n"), 1),
                   {"moe.router.gating_residual=true (runs/cfg.yaml:3)",
                    "moe.router.schedule.diversify.steps=3 (runs/cfg.yaml:6)"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    kind: recurrent\n    freeze: true\n"
                                  "    load_balance: none\n"), 1),
                   {"moe.router.freeze=true (runs/cfg.yaml:4)", "moe.router.kind=recurrent"});
  EXPECT_ERROR_HAS(validate(parse("moe:\n  router:\n    gating_residual: true\n    freeze: true\n"
                                  "    load_balance: none\n"), 1),
                   {"moe.router.freeze=true (runs/cfg.yaml:4)", "moe.router.gating_residual=true"});
}

TEST(ConfigValidate, PyramidMoeCountsEveryLayerAndEveryRank) {
  // One count per MoE layer (4 layers, layer_freq 2: layers 0 and 2).
  EXPECT_NO_THROW(validate(parse("model:\n  num_layers: 4\nmoe:\n  layer_freq: 2\n"
                                 "  num_experts_per_layer: [4, 8]\nparallel:\n  expert: 2\n"), 2));
  EXPECT_ERROR_HAS(parse("moe:\n  num_experts_per_layer: [4, 0]\n"),
                   {"runs/cfg.yaml:2", "moe.num_experts_per_layer[1]", ">= 1"});
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_layers: 4\nmoe:\n  num_experts_per_layer: [4, 8]\n"), 1),
                   {"moe.num_experts_per_layer=[4, 8] (runs/cfg.yaml:4)", "2 counts for the 4 MoE layers",
                    "model.num_layers=4 (runs/cfg.yaml:2)"});
  // EP must divide every layer's count: both keys named.
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_layers: 2\nmoe:\n  num_experts_per_layer: [4, 6]\n"
                                  "parallel:\n  expert: 4\n"), 4),
                   {"moe.num_experts_per_layer=[4, 6] (runs/cfg.yaml:4)", "MoE layer 1 has 6 experts",
                    "parallel.expert=4 (runs/cfg.yaml:6)"});
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_layers: 2\nmoe:\n  top_k: 3\n"
                                  "  num_experts_per_layer: [2, 8]\n"), 1),
                   {"MoE layer 0 routes among 2 rows", "moe.top_k=3 (runs/cfg.yaml:4)"});
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_layers: 2\nmoe:\n  num_experts_per_layer: [4, 8]\n"
                                  "  fssdp:\n    enabled: true\n"), 2),
                   {"moe.num_experts_per_layer=[4, 8]", "moe.fssdp.enabled=true (runs/cfg.yaml:6)"});
  EXPECT_ERROR_HAS(validate(parse("model:\n  num_layers: 2\nmoe:\n  num_experts_per_layer: [4, 8]\n"
                                  "  router:\n    gating_residual: true\n"), 1),
                   {"moe.num_experts_per_layer=[4, 8]", "moe.router.gating_residual=true (runs/cfg.yaml:6)"});
}

TEST(ConfigValidatePipeline, OneStageWithTheNewKeysAtTheirDefaultsValidates) {
  const Config c = parse("parallel:\n  pipeline: 1\n  virtual_pipeline: 1\n"
                         "  pipeline_schedule: 1f1b\n  pipeline_first_stage_layers: 0\n"
                         "  pipeline_last_stage_layers: 0\nmodel:\n  tie_embeddings: true\n");
  for (int world : {1, 2, 4}) EXPECT_NO_THROW(validate(c, world)) << world;
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
