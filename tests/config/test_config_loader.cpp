// Tests of parse_config()/load_config(): a complete file reads into the right fields, and each
// kind of mistake (unknown key, wrong type, out of range, bad YAML) is an Error naming the file,
// the 1-based line, the full key and what is allowed.
#include <gtest/gtest.h>

#include "config/config.h"
#include "error_matchers.h"

namespace origami {
namespace {

const std::string kFile = "configs/test.yaml";

Config parse(const std::string& text) { return parse_config(text, kFile); }

TEST(ConfigLoader, EmptyTextAndEmptySectionsGiveDefaults) {
  EXPECT_EQ(parse(""), Config{});
  EXPECT_EQ(parse("moe:\nmodel: {}\n"), Config{});
  EXPECT_EQ(parse("").source, kFile);
}

TEST(ConfigLoader, CompleteFileReadsEveryField) {
  Config c = load_config(ORIGAMI_SOURCE_DIR "/tests/config/data/small_moe.yaml");
  EXPECT_EQ(c.source, ORIGAMI_SOURCE_DIR "/tests/config/data/small_moe.yaml");
  EXPECT_EQ(c.model.vocab_size, 4096);
  EXPECT_EQ(c.model.rope_theta, 500000.0);
  EXPECT_EQ(c.model.norm_eps, 1e-6);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.moe.top_k, 1);
  EXPECT_FALSE(c.moe.capacity_factor.has_value());
  EXPECT_FALSE(c.moe.router.renormalize);
  EXPECT_EQ(c.moe.router.load_balance, "none");
  EXPECT_EQ(c.moe.router.z_loss_coeff, 1e-4);
  EXPECT_EQ(c.training.seed, 18446744073709551615ull);
  EXPECT_EQ(c.optimizer.decay, "linear");
  EXPECT_EQ(c.optimizer.grad_clip, 0.0);
  ASSERT_EQ(c.data.blend.size(), 2u);
  EXPECT_EQ(c.data.blend[1].path, "data/b_text_document");
  EXPECT_EQ(c.data.blend[0].weight, 0.7);
  EXPECT_EQ(c.data.tokenizer.kind, "byte");
  EXPECT_EQ(c.data.tokenizer.model, "");  // unset keys of a present section keep defaults
  EXPECT_EQ(c.data.split, (std::vector<double>{90, 10, 0}));
  EXPECT_TRUE(c.data.eod_mask_loss);
  EXPECT_EQ(c.checkpoint.keep_last, 2);
  EXPECT_EQ(c.logging.level, "debug");
  // Origins point at the lines the values came from.
  EXPECT_EQ(c.origin.at("moe.top_k"), c.source + ":16");
  EXPECT_EQ(c.origin.at("moe.router.load_balance"), c.source + ":24");
}

TEST(ConfigLoader, ShippedDefaultConfigIsValid) {
  // configs/default.yaml is compiled into origami-train; it must load, validate and round-trip.
  Config c = load_config(ORIGAMI_SOURCE_DIR "/configs/default.yaml");
  EXPECT_NO_THROW(validate(c, 1));
  EXPECT_EQ(parse_config(to_yaml(c), "effective.yaml"), c);
}

TEST(ConfigLoader, MissingFileNamesThePath) {
  EXPECT_ERROR_HAS(load_config("/nonexistent/origami.yaml"), {"/nonexistent/origami.yaml"});
}

TEST(ConfigLoader, UnknownKeyNamesLineKeyAllowedKeysAndSuggestion) {
  std::string msg = testing::error_of([] { parse("moe:\n  num_experts: 8\n  topk: 2\n"); });
  EXPECT_TRUE(testing::has_all(
      msg, {"configs/test.yaml:3", "unknown key 'moe.topk'", "did you mean 'moe.top_k'",
            "num_experts", "capacity_factor", "router"}));
}

TEST(ConfigLoader, UnknownKeyWithoutCloseMatchHasNoSuggestion) {
  std::string msg = testing::error_of([] { parse("\n\nlogging:\n  colour_scheme: dark\n"); });
  EXPECT_TRUE(testing::has_all(msg, {"configs/test.yaml:4", "logging.colour_scheme",
                                     "dir, interval, level, expert_load_interval"}));
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
}

TEST(ConfigLoader, UnknownSectionListsSections) {
  EXPECT_ERROR_HAS(parse("model: {}\noptimiser:\n  lr: 1\n"),
                   {"configs/test.yaml:2", "unknown key 'optimiser'", "did you mean 'optimizer'",
                    "model, moe, parallel, training, optimizer, data, checkpoint, logging"});
}

TEST(ConfigLoader, NestedRouterKeys) {
  Config c = parse("moe:\n  router:\n    aux_loss_coeff: 0.5\n");
  EXPECT_EQ(c.moe.router.aux_loss_coeff, 0.5);
  EXPECT_EQ(c.moe.router.z_loss_coeff, RouterConfig{}.z_loss_coeff);
  EXPECT_ERROR_HAS(
      parse("moe:\n  top_k: 2\n  router:\n    aux_loss_coef: 0.1\n"),
      {"configs/test.yaml:4", "unknown key 'moe.router.aux_loss_coef'",
       "did you mean 'moe.router.aux_loss_coeff'", "allowed keys in section moe.router",
       "score, pre_softmax, renormalize, scaling_factor, num_groups, group_topk, expert_bias, "
       "bias_update_rate, load_balance, aux_loss_coeff, z_loss_coeff, schedule"});
  EXPECT_ERROR_HAS(parse("moe:\n  router: softmax\n"),
                   {"configs/test.yaml:2", "moe.router", "expected a map", "'softmax'"});
  EXPECT_EQ(parse("moe:\n  router:\n    score: sigmoid\n").moe.router.score, "sigmoid");
  EXPECT_ERROR_HAS(parse("moe:\n  router:\n    score: sigmod\n"),
                   {"configs/test.yaml:3", "moe.router.score", "did you mean 'sigmoid'",
                    "allowed: softmax, sigmoid"});
}

TEST(ConfigLoader, RouterScheduleKeys) {
  Config c = parse(
      "moe:\n  router:\n    schedule:\n      kind: dense_to_sparse\n      anneal: cosine\n"
      "      tau_end: 0.1\n      diversify: {steps: 50, mask_ratio: 0.25}\n");
  EXPECT_EQ(c.moe.router.schedule.kind, "dense_to_sparse");
  EXPECT_EQ(c.moe.router.schedule.anneal, "cosine");
  EXPECT_EQ(c.moe.router.schedule.tau_end, 0.1);
  EXPECT_EQ(c.moe.router.schedule.diversify.steps, 50);
  EXPECT_EQ(c.moe.router.schedule.diversify.mask_ratio, 0.25);
  EXPECT_EQ(c.moe.router.schedule.diversify.noise_std, 0.0);
  EXPECT_EQ(parse_config(to_yaml(c), "round trip"), c);
  EXPECT_ERROR_HAS(parse("moe:\n  router:\n    schedule:\n      kind: dense\n"),
                   {"configs/test.yaml:4", "moe.router.schedule.kind",
                    "allowed: static, dense_to_sparse, topk_anneal"});
  EXPECT_ERROR_HAS(parse("moe:\n  router:\n    schedule:\n      threshold: 1.5\n"),
                   {"moe.router.schedule.threshold", "out of range", "< 1"});
  EXPECT_ERROR_HAS(parse("moe:\n  router:\n    schedule:\n      diversify:\n        mask_ratio: 2\n"),
                   {"moe.router.schedule.diversify.mask_ratio", "out of range", "<= 1"});
  EXPECT_ERROR_HAS(parse("moe:\n  router:\n    scaling_factor: 0\n"),
                   {"moe.router.scaling_factor", "out of range", "> 0"});
}

TEST(ConfigLoader, WrongTypes) {
  EXPECT_ERROR_HAS(parse("moe:\n  top_k: two\n"),
                   {"configs/test.yaml:2", "moe.top_k", "expected an integer", "'two'"});
  EXPECT_ERROR_HAS(parse("moe:\n  top_k: \"2\"\n"),
                   {"configs/test.yaml:2", "moe.top_k", "expected an integer", "quoted string"});
  EXPECT_ERROR_HAS(parse("model:\n  hidden_size: 64.5\n"),
                   {"configs/test.yaml:2", "model.hidden_size", "no fraction", "'64.5'"});
  EXPECT_ERROR_HAS(parse("model:\n  hidden_size: [64]\n"),
                   {"configs/test.yaml:2", "model.hidden_size", "a list of 1 item"});
  EXPECT_ERROR_HAS(
      parse("model:\n  tie_embeddings: 1\n"),
      {"configs/test.yaml:2", "model.tie_embeddings", "expected true or false", "'1'"});
  EXPECT_ERROR_HAS(parse("optimizer:\n  lr: fast\n"),
                   {"configs/test.yaml:2", "optimizer.lr", "expected a finite number", "'fast'"});
  EXPECT_ERROR_HAS(parse("optimizer:\n  lr: .inf\n"), {"optimizer.lr", "finite number"});
  EXPECT_ERROR_HAS(parse("logging:\n  dir: {a: 1}\n"),
                   {"configs/test.yaml:2", "logging.dir", "expected a string", "a map"});
  EXPECT_ERROR_HAS(parse("training:\n  seed: -1\n"),
                   {"configs/test.yaml:2", "training.seed", "non-negative integer"});
  EXPECT_ERROR_HAS(parse("moe: 8\n"), {"configs/test.yaml:1", "moe", "expected a map", "'8'"});
  EXPECT_ERROR_HAS(parse("- model\n"), {"configs/test.yaml", "expected a map", "a list"});
}

TEST(ConfigLoader, OutOfRange) {
  EXPECT_ERROR_HAS(parse("moe:\n  top_k: 0\n"),
                   {"configs/test.yaml:2", "moe.top_k", "0 is out of range", "allowed: >= 1"});
  EXPECT_ERROR_HAS(parse("\nmoe:\n  router:\n    z_loss_coeff: -0.5\n"),
                   {"configs/test.yaml:4", "moe.router.z_loss_coeff", "-0.5", "allowed: >= 0"});
  EXPECT_ERROR_HAS(parse("moe:\n  capacity_factor: 0\n"),
                   {"configs/test.yaml:2", "moe.capacity_factor", "allowed: > 0"});
  EXPECT_ERROR_HAS(parse("optimizer:\n  beta2: 1.0\n"),
                   {"configs/test.yaml:2", "optimizer.beta2", "allowed: >= 0 and < 1"});
  EXPECT_ERROR_HAS(parse("training:\n  backend: gpu\n"),
                   {"configs/test.yaml:2", "training.backend", "'gpu'", "allowed: cpu, cuda"});
  EXPECT_ERROR_HAS(
      parse("optimizer:\n  decay: cosin\n"),
      {"optimizer.decay", "did you mean 'cosine'", "allowed: cosine, linear, constant"});
  EXPECT_ERROR_HAS(parse("moe:\n  router:\n    load_balance: global\n"),
                   {"configs/test.yaml:3", "moe.router.load_balance", "'global'",
                    "allowed: none, micro_batch, sequence, global_batch"});
  EXPECT_EQ(parse("moe:\n  router:\n    load_balance: global_batch\n").moe.router.load_balance,
            "global_batch");
  EXPECT_ERROR_HAS(parse("moe:\n  drop_policy: random\n"),
                   {"configs/test.yaml:2", "moe.drop_policy", "allowed: probs, position"});
  EXPECT_ERROR_HAS(parse("data:\n  tokenizer:\n    kind: bpe\n"),
                   {"configs/test.yaml:3", "data.tokenizer.kind", "allowed: sentencepiece, byte"});
  EXPECT_ERROR_HAS(parse("parallel:\n  expert: -2\n"),
                   {"configs/test.yaml:2", "parallel.expert", "allowed: >= 1"});
}

TEST(ConfigLoader, PipelineKeys) {
  Config c = parse("parallel:\n  pipeline: 4\n  pipeline_schedule: gpipe\n"
                   "  pipeline_first_stage_layers: 3\n  pipeline_last_stage_layers: 1\n");
  EXPECT_EQ(c.parallel.pipeline_schedule, "gpipe");
  EXPECT_EQ(c.parallel.pipeline_first_stage_layers, 3);
  EXPECT_EQ(c.parallel.pipeline_last_stage_layers, 1);
  EXPECT_EQ(c.origin.at("parallel.pipeline_schedule"), kFile + ":3");
  EXPECT_EQ(c.origin.at("parallel.pipeline_last_stage_layers"), kFile + ":5");
  EXPECT_EQ(parse("parallel:\n  pipeline: 2\n").parallel.pipeline_schedule, "1f1b");
  EXPECT_EQ(parse("parallel:\n  virtual_pipeline: 2\n").parallel.pipeline_schedule,
            "interleaved");
  EXPECT_EQ(parse("parallel:\n  virtual_pipeline: 2\n  pipeline_schedule: gpipe\n")
                .parallel.pipeline_schedule,
            "gpipe");
  EXPECT_ERROR_HAS(parse("parallel:\n  pipeline: 2\n  pipeline_schedule: zb1p\n"),
                   {"configs/test.yaml:3", "parallel.pipeline_schedule",
                    "'zb1p' is not an allowed value", "allowed: 1f1b, interleaved, gpipe"});
  EXPECT_ERROR_HAS(parse("parallel:\n  pipeline_schedule: interleave\n"),
                   {"configs/test.yaml:2", "did you mean 'interleaved'",
                    "allowed: 1f1b, interleaved, gpipe"});
  EXPECT_ERROR_HAS(parse("parallel:\n  pipeline_schedule: 2\n"),
                   {"configs/test.yaml:2", "parallel.pipeline_schedule", "'2'",
                    "allowed: 1f1b, interleaved, gpipe"});
  EXPECT_ERROR_HAS(parse("parallel:\n  pipeline_first_stage_layers: -1\n"),
                   {"configs/test.yaml:2", "parallel.pipeline_first_stage_layers",
                    "-1 is out of range", "allowed: >= 0"});
  EXPECT_ERROR_HAS(parse("parallel:\n  pipeline_last_stage_layers: 1.5\n"),
                   {"configs/test.yaml:2", "parallel.pipeline_last_stage_layers", "no fraction"});
  EXPECT_ERROR_HAS(parse("parallel:\n  pipeline_first_layers: 2\n"),
                   {"configs/test.yaml:2", "unknown key 'parallel.pipeline_first_layers'",
                    "pipeline_schedule, pipeline_first_stage_layers, pipeline_last_stage_layers"});
}

TEST(ConfigLoader, CapacityFactorNullOrPositive) {
  EXPECT_EQ(parse("moe:\n  capacity_factor: 1.25\n").moe.capacity_factor, 1.25);
  EXPECT_FALSE(parse("moe:\n  capacity_factor: ~\n").moe.capacity_factor.has_value());
}

TEST(ConfigLoader, DataSplit) {
  EXPECT_EQ(parse("data:\n  split: [1, 0, 0.5]\n").data.split, (std::vector<double>{1, 0, 0.5}));
  EXPECT_ERROR_HAS(parse("data:\n  split: [98, 2]\n"),
                   {"configs/test.yaml:2", "data.split", "list of 3 numbers", "2 item"});
  EXPECT_ERROR_HAS(parse("data:\n  split: [98, -2, 0]\n"),
                   {"configs/test.yaml:2", "data.split[1]", "allowed: >= 0"});
  EXPECT_ERROR_HAS(parse("data:\n  split: [0, 0, 0]\n"),
                   {"configs/test.yaml:2", "data.split", "positive sum"});
  EXPECT_ERROR_HAS(parse("data:\n  split: 98,2,0\n"), {"data.split", "list of 3 numbers"});
}

TEST(ConfigLoader, DataBlendEntries) {
  EXPECT_EQ(parse("data:\n  blend: [{path: a}]\n").data.blend.at(0).weight, 1.0);
  EXPECT_ERROR_HAS(
      parse("data:\n  blend:\n    - {path: a, weight: 1}\n    - {path: b, weight: 0}\n"),
      {"configs/test.yaml:4", "data.blend[1].weight", "allowed: > 0"});
  EXPECT_ERROR_HAS(parse("data:\n  blend:\n    - {weight: 1}\n"),
                   {"configs/test.yaml:3", "data.blend[0].path", "missing"});
  EXPECT_ERROR_HAS(parse("data:\n  blend:\n    - path: a\n      wieght: 2\n"),
                   {"configs/test.yaml:4", "data.blend[0].wieght", "allowed keys", "path, weight"});
  EXPECT_ERROR_HAS(parse("data:\n  blend: data/a\n"),
                   {"configs/test.yaml:2", "data.blend", "list"});
}

TEST(ConfigLoader, DuplicateKey) {
  EXPECT_ERROR_HAS(parse("moe:\n  top_k: 1\n  top_k: 2\n"),
                   {"configs/test.yaml:3", "duplicate key 'moe.top_k'"});
}

TEST(ConfigLoader, InvalidYamlNamesLine) {
  EXPECT_ERROR_HAS(parse("moe:\n  top_k: [1, 2\nmodel: {}\n"),
                   {"configs/test.yaml:", "invalid YAML"});
  EXPECT_ERROR_HAS(parse("model:\n  hidden_size: 64\n   vocab_size: 3\n"),
                   {"configs/test.yaml:3", "invalid YAML"});
}

}  // namespace
}  // namespace origami
