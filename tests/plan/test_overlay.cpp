// The overlay origami-plan writes goes back through the config loader to the same layout: as
// --set lines (origami-train --set) and as the whole effective YAML (--config-out).
#include <gtest/gtest.h>

#include <sstream>

#include "plan/layout_space.h"
#include "plan/plan_report.h"
#include "plan/planner.h"
#include "plan_test_config.h"

namespace origami {
namespace {

TEST(Overlay, SetLinesRoundTripThroughTheLoader) {
  const Config base = test::tiny_config();
  const auto space = enumerate_layouts(base, 8);
  ASSERT_GT(space.valid.size(), 100u);
  for (size_t i = 0; i < space.valid.size(); i += 37) {
    const Layout& l = space.valid[i];
    std::istringstream lines(overlay_text(plan_assignments(base, l)));
    Config cfg = base;
    std::string flag, assignment;
    while (lines >> flag >> assignment) {
      ASSERT_EQ(flag, "--set");
      apply_override(cfg, assignment);
    }
    EXPECT_NO_THROW(validate(cfg, 8));
    EXPECT_EQ(layout_of(cfg, 8), l) << describe_layout(l);
    EXPECT_TRUE(cfg == apply_layout(base, l));
    // The YAML fragment path: the effective config read back.
    const Config again = parse_config(to_yaml(cfg), "round-trip");
    EXPECT_EQ(layout_of(again, 8), l) << describe_layout(l);
  }
}

}  // namespace
}  // namespace origami
