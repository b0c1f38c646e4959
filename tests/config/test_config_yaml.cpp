// Tests of to_yaml(): the effective config loads back to an equal Config (defaults, a config with
// every field changed, and strings YAML would otherwise misread), and every key it writes is
// documented in docs/configuration.md.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "config/config.h"

namespace origami {
namespace {

// Every field away from its default, including the awkward values (max seed, tiny and huge
// doubles, empty/quoted/"null" strings), so a dropped or mis-written key breaks equality.
Config everything_changed() {
  Config c;
  c.model = {.vocab_size = 50257,
             .hidden_size = 96,
             .num_layers = 6,
             .num_attention_heads = 6,
             .num_query_groups = 3,
             .ffn_hidden_size = 384,
             .max_seq_length = 1024,
             .rope_theta = 1e6,
             .norm_eps = 1e-6,
             .tie_embeddings = true,
             .init_std = 0.1 / 3};
  c.moe = {.num_experts = 16,
           .top_k = 4,
           .expert_ffn_hidden_size = 48,
           .shared_expert_ffn_hidden_size = 32,
           .layer_freq = 2,
           .capacity_factor = 1.25,
           .dropless_reserve = 2.5,
           .router = {.score = "softmax",
                      .renormalize = false,
                      .freeze = true,
                      .load_balance = "none",
                      .aux_loss_coeff = 0.0,
                      .z_loss_coeff = 2.5e-5},
           .fssdp = {.enabled = true,
                     .placement = "ep",
                     .max_replicas_per_rank = 3,
                     .load_window = 7,
                     .reshard_interval = 50,
                     .rematerialize = true}};
  c.parallel = {.tensor = 2,
                .context = 2,
                .pipeline = 4,
                .virtual_pipeline = 2,
                .pipeline_schedule = "gpipe",
                .pipeline_first_stage_layers = 3,
                .pipeline_last_stage_layers = 1,
                .expert = 8,
                .expert_tensor = 2,
                .sequence_parallel = true};
  c.training = {.backend = "cuda",
                .micro_batch_size = 1,
                .global_batch_size = 1024,
                .seq_length = 4096,
                .train_steps = 100000,
                .seed = 18446744073709551615ull,
                .precision = "bf16",
                .recompute = "full",
                .eval_interval = 500,
                .eval_steps = 7};
  c.optimizer = {.lr = 1.5e-4,
                 .min_lr = 0,
                 .warmup_steps = 2000,
                 .decay = "constant",
                 .decay_steps = 90000,
                 .weight_decay = 0.01,
                 .beta1 = 0.8,
                 .beta2 = 0.999,
                 .eps = 1e-15,
                 .grad_clip = 0,
                 .distributed = true};
  c.data.blend = {{"data/a \"quoted\" name", 0.3}, {"null", 2}, {"8", 1e-9}};
  c.data.tokenizer = {.kind = "byte", .model = "tok: model.model"};
  c.data.split = {969, 30, 1};
  c.data.cache_dir = "~";
  c.data.eod_mask_loss = true;
  c.checkpoint = {.dir = "", .save_interval = 250, .keep_last = 1, .load = "ckpt/iter_0000250"};
  c.logging = {.dir = "runs/x#1", .interval = 10, .level = "warn", .expert_load_interval = 0};
  return c;
}

TEST(ConfigYaml, DefaultsRoundTrip) {
  Config c;
  EXPECT_EQ(parse_config(to_yaml(c), "effective.yaml"), c) << to_yaml(c);
}

TEST(ConfigYaml, EveryFieldChangedRoundTrips) {
  Config c = everything_changed();
  c.source = "effective.yaml";  // to_yaml's header names the source
  ASSERT_FALSE(c == Config{});
  std::string text = to_yaml(c);
  Config back = parse_config(text, "effective.yaml");
  EXPECT_EQ(back, c) << text;
  EXPECT_EQ(to_yaml(back), text);
  // Every key was written explicitly, so every key has an origin line in the effective file.
  EXPECT_EQ(back.origin.size(), config_keys().size());
}

TEST(ConfigYaml, FileRoundTrips) {
  Config c = load_config(ORIGAMI_SOURCE_DIR "/tests/config/data/small_moe.yaml");
  EXPECT_EQ(parse_config(to_yaml(c), "effective.yaml"), c);
}

TEST(ConfigYaml, SectionsAreBlocksInSchemaOrder) {
  std::string text = to_yaml(Config{});
  size_t model = text.find("\nmodel:\n"), moe = text.find("\nmoe:\n"),
         router = text.find("\n  router:\n    score: softmax\n"),
         logging = text.find("\nlogging:\n");
  ASSERT_NE(model, std::string::npos) << text;
  ASSERT_NE(router, std::string::npos) << text;
  EXPECT_LT(model, moe);
  EXPECT_LT(moe, router);
  EXPECT_LT(router, logging);
  EXPECT_NE(text.find("  capacity_factor: null\n"), std::string::npos) << text;
}

TEST(ConfigYaml, PipelineKeysRoundTrip) {
  const std::string defaults = to_yaml(Config{});
  EXPECT_NE(defaults.find("  virtual_pipeline: 1\n  pipeline_schedule: 1f1b\n"
                          "  pipeline_first_stage_layers: 0\n  pipeline_last_stage_layers: 0\n"),
            std::string::npos)
      << defaults;
  // An uneven split with the schedule left unset: v > 1 makes it interleaved, and the effective
  // file says so explicitly, loading back to the same Config (and the same validate() verdict).
  Config c = parse_config("model:\n  num_layers: 16\nparallel:\n  pipeline: 4\n"
                          "  virtual_pipeline: 2\n  pipeline_first_stage_layers: 2\n"
                          "  pipeline_last_stage_layers: 6\n",
                          "pp.yaml");
  EXPECT_EQ(c.parallel.pipeline_schedule, "interleaved");
  EXPECT_EQ(c.parallel.pipeline_first_stage_layers, 2);
  EXPECT_EQ(c.parallel.pipeline_last_stage_layers, 6);
  const std::string text = to_yaml(c);
  EXPECT_NE(text.find("  virtual_pipeline: 2\n  pipeline_schedule: interleaved\n"
                      "  pipeline_first_stage_layers: 2\n  pipeline_last_stage_layers: 6\n"),
            std::string::npos)
      << text;
  Config back = parse_config(text, "effective.yaml");
  EXPECT_EQ(back, c);
  EXPECT_EQ(pipeline_schedule_kind(back), ScheduleKind::interleaved);
  // Each explicit spelling is written as given.
  for (const char* kind : {"1f1b", "interleaved", "gpipe"}) {
    Config k = parse_config(fmt::format("parallel:\n  pipeline: 2\n  virtual_pipeline: {}\n"
                                        "  pipeline_schedule: {}\n",
                                        std::string(kind) == "1f1b" ? 1 : 2, kind),
                            "k.yaml");
    Config k_back = parse_config(to_yaml(k), "effective.yaml");
    EXPECT_EQ(k_back, k) << kind;
    EXPECT_EQ(k_back.parallel.pipeline_schedule, kind);
  }
  // A Config built in code with v > 1 and the schedule untouched runs, and is written, as
  // interleaved.
  Config code;
  code.parallel.virtual_pipeline = 2;
  EXPECT_EQ(pipeline_schedule_kind(code), ScheduleKind::interleaved);
  EXPECT_NE(to_yaml(code).find("  pipeline_schedule: interleaved\n"), std::string::npos);
  EXPECT_EQ(pipeline_schedule_kind(Config{}), ScheduleKind::one_f_one_b);
}

TEST(ConfigYaml, EveryKeyIsDocumented) {
  std::ifstream in(ORIGAMI_SOURCE_DIR "/docs/configuration.md");
  ASSERT_TRUE(in.good()) << "docs/configuration.md is missing";
  std::stringstream doc;
  doc << in.rdbuf();
  for (const auto& key : config_keys())
    EXPECT_NE(doc.str().find("`" + key + "`"), std::string::npos)
        << key << " is not documented in docs/configuration.md";
}

}  // namespace
}  // namespace origami
