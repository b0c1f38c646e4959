// Enumeration: every emitted layout passes validate(); the quick pre-checks drop nothing that
// validate() would accept (a brute-force sweep of the whole cross product finds the same set);
// layouts validate() refuses are absent; the field-by-field setter equals the --set path.
#include <gtest/gtest.h>

#include <algorithm>

#include "base/error.h"
#include "plan/layout_space.h"
#include "plan_test_config.h"

namespace origami {
namespace {

using test::tiny_config;

bool contains(const std::vector<Layout>& v, const Layout& l) {
  return std::find(v.begin(), v.end(), l) != v.end();
}

TEST(LayoutSpace, EveryLayoutValidatesAndBruteForceAgrees) {
  const Config base = tiny_config();
  const int world = 4;
  const LayoutSpace space = enumerate_layouts(base, world);
  ASSERT_FALSE(space.valid.empty());
  for (const Layout& l : space.valid) EXPECT_NO_THROW(validate(apply_layout(base, l), world)) << describe_layout(l);
  // Every combination of sizes up to the world, without the pre-checks.
  std::vector<Layout> brute;
  const std::vector<int> sizes = {1, 2, 3, 4};
  for (int tp : sizes)
    for (int cp : sizes)
      for (int pp : sizes)
        for (int v : sizes)
          for (int ep : sizes)
            for (int etp : sizes)
              for (int64_t mbs : {1, 2, 4, 8, 16})
                for (bool zero : {false, true})
                  for (const char* rc : {"none", "selective", "full"}) {
                    Layout l{.tp = tp, .cp = cp, .pp = pp, .v = v, .ep = ep, .etp = etp,
                             .zero = zero, .recompute = rc, .micro_batch_size = mbs};
                    Config c = base;
                    set_layout(c, l);
                    try {
                      validate(c, world);
                    } catch (const Error&) {
                      continue;
                    }
                    brute.push_back(layout_of(c, world));
                  }
  EXPECT_EQ(brute.size(), space.valid.size());
  for (const Layout& l : brute) EXPECT_TRUE(contains(space.valid, l)) << describe_layout(l);
  // The counts of this config, so a change in validate() or the search shows up here.
  EXPECT_EQ(space.valid.size(), 1416u);
  EXPECT_EQ(space.candidates, int64_t(space.valid.size()) + space.refused);
}

TEST(LayoutSpace, KnownInvalidLayoutsAreAbsent) {
  const Config base = tiny_config();
  const LayoutSpace space = enumerate_layouts(base, 4);
  for (const Layout& l : space.valid) {
    EXPECT_LE(l.tp * l.cp * l.pp, 4);
    EXPECT_EQ(8 % l.ep, 0);                      // experts over EP
    EXPECT_EQ(16 % (l.micro_batch_size * l.dp), 0);  // the global batch splits
    EXPECT_TRUE(l.pp > 1 || l.v == 1);            // virtual stages need a pipeline
    EXPECT_LE(l.pp * l.v, 4);                     // at least one layer per chunk
    EXPECT_EQ(l.dp * l.tp * l.cp * l.pp, 4);
    EXPECT_EQ(l.edp * l.ep * l.etp * l.pp, 4);
  }
  // PP4 with v2 would need 8 chunks of a 4-layer model; EP3 does not divide 4 ranks.
  Layout pp4v2{.pp = 4, .v = 2, .micro_batch_size = 4, .dp = 1, .edp = 1, .micro_batches = 4};
  EXPECT_FALSE(contains(space.valid, pp4v2));
  for (const Layout& l : space.valid) EXPECT_NE(l.ep, 3);
}

TEST(LayoutSpace, SetterEqualsTheOverridePath) {
  const Config base = tiny_config();
  for (const Layout& l : enumerate_layouts(base, 4).valid) {
    Config direct = base;
    set_layout(direct, l);
    EXPECT_TRUE(direct == apply_layout(base, l)) << describe_layout(l);
  }
}

}  // namespace
}  // namespace origami
