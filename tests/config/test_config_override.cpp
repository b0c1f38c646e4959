// Tests of apply_override() ("--set section.key=value"): values are parsed as YAML and checked
// like file values, and errors quote the whole --set argument so the user sees which one failed.
#include <gtest/gtest.h>

#include "config/config.h"
#include "error_matchers.h"

namespace origami {
namespace {

TEST(ConfigOverride, SetsScalarsListsNullsAndSections) {
  Config c;
  apply_override(c, "moe.top_k=1");
  apply_override(c, "data.split=[90,10,0]");
  apply_override(c, "moe.router.aux_loss_coeff=0");
  apply_override(c, "moe.capacity_factor=1.5");
  apply_override(c, "model.tie_embeddings=true");
  apply_override(c, "logging.dir=runs/with spaces=and equals");
  apply_override(c, "moe.router={load_balance: none, renormalize: false}");
  EXPECT_EQ(c.moe.top_k, 1);
  EXPECT_EQ(c.data.split, (std::vector<double>{90, 10, 0}));
  EXPECT_EQ(c.moe.router.aux_loss_coeff, 0.0);
  EXPECT_EQ(c.moe.capacity_factor, 1.5);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.logging.dir, "runs/with spaces=and equals");
  EXPECT_EQ(c.moe.router.load_balance, "none");
  EXPECT_FALSE(c.moe.router.renormalize);
  EXPECT_EQ(c.moe.router.score, RouterConfig{}.score);  // keys not in the map keep their value
  apply_override(c, "moe.capacity_factor=null");
  EXPECT_FALSE(c.moe.capacity_factor.has_value());
  EXPECT_EQ(c.origin.at("moe.top_k"), "--set moe.top_k=1");
}

TEST(ConfigOverride, PipelineKeys) {
  Config c;
  apply_override(c, "parallel.pipeline_schedule=gpipe");
  apply_override(c, "parallel.pipeline_first_stage_layers=3");
  apply_override(c, "parallel.pipeline_last_stage_layers=5");
  EXPECT_EQ(c.parallel.pipeline_schedule, "gpipe");
  EXPECT_EQ(c.parallel.pipeline_first_stage_layers, 3);
  EXPECT_EQ(c.parallel.pipeline_last_stage_layers, 5);
  EXPECT_EQ(c.origin.at("parallel.pipeline_schedule"), "--set parallel.pipeline_schedule=gpipe");
  EXPECT_EQ(c.origin.at("parallel.pipeline_first_stage_layers"),
            "--set parallel.pipeline_first_stage_layers=3");
  EXPECT_EQ(c.origin.at("parallel.pipeline_last_stage_layers"),
            "--set parallel.pipeline_last_stage_layers=5");
  apply_override(c, "parallel.pipeline_schedule=interleaved");
  EXPECT_EQ(c.parallel.pipeline_schedule, "interleaved");
  apply_override(c, "parallel={pipeline_schedule: 1f1b, pipeline_last_stage_layers: 0}");
  EXPECT_EQ(c.parallel.pipeline_schedule, "1f1b");
  EXPECT_EQ(c.parallel.pipeline_last_stage_layers, 0);
  EXPECT_ERROR_HAS(apply_override(c, "parallel.pipeline_schedule=1F1B"),
                   {"--set parallel.pipeline_schedule=1F1B", "parallel.pipeline_schedule",
                    "'1F1B' is not an allowed value", "allowed: 1f1b, interleaved, gpipe"});
  EXPECT_ERROR_HAS(apply_override(c, "parallel.pipeline_first_stage_layers=-1"),
                   {"--set parallel.pipeline_first_stage_layers=-1",
                    "parallel.pipeline_first_stage_layers", "allowed: >= 0"});
  EXPECT_ERROR_HAS(apply_override(c, "parallel.pipeline_last_stage_layers=two"),
                   {"--set parallel.pipeline_last_stage_layers=two", "expected an integer"});
  EXPECT_EQ(c.parallel.pipeline_schedule, "1f1b");
}

TEST(ConfigOverride, UnsetScheduleFollowsVirtualPipeline) {
  // Left unset, the schedule is interleaved exactly while virtual_pipeline > 1, whichever of the
  // file and --set gave v; an explicit value stays as given.
  Config c = parse_config("parallel:\n  virtual_pipeline: 2\n", "x.yaml");
  EXPECT_EQ(c.parallel.pipeline_schedule, "interleaved");
  apply_override(c, "parallel.virtual_pipeline=1");
  EXPECT_EQ(c.parallel.pipeline_schedule, "1f1b");
  apply_override(c, "parallel.virtual_pipeline=3");
  EXPECT_EQ(c.parallel.pipeline_schedule, "interleaved");
  EXPECT_FALSE(c.origin.contains("parallel.pipeline_schedule"));
  apply_override(c, "parallel.pipeline_schedule=1f1b");
  EXPECT_EQ(c.parallel.pipeline_schedule, "1f1b");
  EXPECT_EQ(pipeline_schedule_kind(c), ScheduleKind::one_f_one_b);  // explicit: refused by validate
  apply_override(c, "parallel.pipeline_schedule=gpipe");
  apply_override(c, "parallel.virtual_pipeline=1");
  EXPECT_EQ(c.parallel.pipeline_schedule, "gpipe");
}

TEST(ConfigOverride, OverridesWinOverFileValues) {
  Config c = parse_config("moe:\n  top_k: 2\n  num_experts: 4\n", "x.yaml");
  apply_override(c, "moe.top_k=4");
  EXPECT_EQ(c.moe.top_k, 4);
  EXPECT_EQ(c.moe.num_experts, 4);
  EXPECT_EQ(c.origin.at("moe.num_experts"), "x.yaml:3");
}

TEST(ConfigOverride, Errors) {
  Config c;
  EXPECT_ERROR_HAS(apply_override(c, "moe.topk=1"),
                   {"--set moe.topk=1", "unknown key 'moe.topk'", "did you mean 'moe.top_k'"});
  EXPECT_ERROR_HAS(apply_override(c, "modl.hidden_size=1"),
                   {"--set modl.hidden_size=1", "unknown key 'modl'", "did you mean 'model'"});
  EXPECT_ERROR_HAS(
      apply_override(c, "moe.router.zloss=1"),
      {"--set moe.router.zloss=1", "moe.router.zloss", "allowed keys in section moe.router"});
  EXPECT_ERROR_HAS(apply_override(c, "moe.top_k=two"),
                   {"--set moe.top_k=two", "moe.top_k", "expected an integer", "'two'"});
  EXPECT_ERROR_HAS(apply_override(c, "moe.top_k=0"), {"--set moe.top_k=0", "allowed: >= 1"});
  EXPECT_ERROR_HAS(apply_override(c, "moe.top_k"), {"--set moe.top_k", "section.key=value"});
  EXPECT_ERROR_HAS(apply_override(c, "moe.top_k.x=1"),
                   {"--set moe.top_k.x=1", "moe.top_k is a value, not a section"});
  EXPECT_ERROR_HAS(apply_override(c, "data.split=[1, 2"),
                   {"--set data.split=[1, 2", "invalid YAML"});
  EXPECT_ERROR_HAS(apply_override(c, "moe=3"), {"--set moe=3", "moe", "expected a map"});
  EXPECT_ERROR_HAS(apply_override(c, "moe..top_k=3"), {"--set moe..top_k=3", "empty part"});
  // A failed override leaves the value as it was.
  EXPECT_EQ(c.moe.top_k, MoeConfig{}.top_k);
}

}  // namespace
}  // namespace origami
