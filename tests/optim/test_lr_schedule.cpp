// The learning-rate schedule pinned at chosen steps against Megatron's formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "optim/lr_schedule.h"

namespace origami {
namespace {

OptimizerConfig opt(const std::string& decay) {
  OptimizerConfig o;
  o.lr = 1e-3;
  o.min_lr = 1e-4;
  o.warmup_steps = 10;
  o.decay = decay;
  return o;
}

TEST(LrSchedule, LinearWarmupFromZero) {
  auto o = opt("cosine");
  EXPECT_DOUBLE_EQ(learning_rate(o, 0, 110), 1e-4);   // first update: lr * 1/10
  EXPECT_DOUBLE_EQ(learning_rate(o, 4, 110), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9, 110), 1e-3);   // last warmup step reaches lr
}

TEST(LrSchedule, CosineDecayToMinLr) {
  auto o = opt("cosine");
  EXPECT_DOUBLE_EQ(learning_rate(o, 10, 110), 1e-3);  // r = 0
  EXPECT_NEAR(learning_rate(o, 60, 110), 1e-4 + 0.9e-3 * 0.5, 1e-15);  // r = 1/2
  EXPECT_NEAR(learning_rate(o, 35, 110),
              1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25)), 1e-15);
  EXPECT_DOUBLE_EQ(learning_rate(o, 110, 110), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(o, 500, 110), 1e-4);
}

TEST(LrSchedule, LinearAndConstantAndExplicitDecaySteps) {
  auto lin = opt("linear");
  EXPECT_NEAR(learning_rate(lin, 60, 110), 1e-4 + 0.9e-3 * 0.5, 1e-15);
  auto c = opt("constant");
  EXPECT_DOUBLE_EQ(learning_rate(c, 100, 110), 1e-3);
  auto d = opt("cosine");
  d.decay_steps = 60;  // decay ends before training does
  EXPECT_DOUBLE_EQ(learning_rate(d, 60, 110), 1e-4);
  EXPECT_NEAR(learning_rate(d, 35, 110), 1e-4 + 0.9e-3 * 0.5, 1e-15);
}

}  // namespace
}  // namespace origami
