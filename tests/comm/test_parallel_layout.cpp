// Tests of ParallelLayout against a direct enumeration of DESIGN.md's folding formulas: for a
// table of layouts (1..16 ranks), every rank's coordinates, and every group as the set of ranks
// whose coordinates agree on all but the group's dimensions; groups partition the world; sizes;
// and errors for sizes that do not tile the world.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <set>

#include "base/error.h"
#include "comm/parallel_layout.h"

namespace origami {
namespace {

using Group = ParallelLayout::Group;

// DESIGN.md, "Parallel folding, concretely", written out independently of the implementation.
struct Formula {
  int stage, s, tp, cp, dp, etp, ep, edp;
};
Formula formula(const ParallelSizes& z, int r) {
  const int S = z.world / z.pp;
  const int s = r % S;
  return {r / S,
          s,
          s % z.tp,
          (s / z.tp) % z.cp,
          s / (z.tp * z.cp),
          s % z.etp,
          (s / z.etp) % z.ep,
          s / (z.etp * z.ep)};
}

// Whether ranks with coordinates a and b share group g (by its definition, not its structure).
bool same_group(Group g, const Formula& a, const Formula& b, int pp) {
  const bool stage = a.stage == b.stage;
  switch (g) {
    case Group::world:
      return true;
    case Group::stage:
      return stage;
    case Group::tp:
      return stage && a.cp == b.cp && a.dp == b.dp;
    case Group::cp:
      return stage && a.tp == b.tp && a.dp == b.dp;
    case Group::dp:
      return stage && a.tp == b.tp && a.cp == b.cp;
    case Group::dp_cp:
      return stage && a.tp == b.tp;
    case Group::tp_cp:
      return stage && a.dp == b.dp;
    case Group::tp_dp_cp:
      return stage;
    case Group::ep:
      return stage && a.etp == b.etp && a.edp == b.edp;
    case Group::etp:
      return stage && a.ep == b.ep && a.edp == b.edp;
    case Group::edp:
      return stage && a.etp == b.etp && a.ep == b.ep;
    case Group::etp_ep:
      return stage && a.edp == b.edp;
    case Group::ep_edp:
      return stage && a.etp == b.etp;
    case Group::self:
      return a.stage == b.stage && a.s == b.s;
    case Group::pp:
      return a.s == b.s;
    case Group::embedding: {
      auto end = [&](const Formula& f) { return f.stage == 0 || f.stage == pp - 1; };
      return (a.s == b.s && end(a) && end(b)) || (a.s == b.s && a.stage == b.stage);
    }
  }
  return false;
}

int expected_size(Group g, const ParallelLayout& l, const Formula& f) {
  switch (g) {
    case Group::world:
      return l.world();
    case Group::stage:
    case Group::tp_dp_cp:
      return l.stage_size();
    case Group::tp:
      return l.tp();
    case Group::cp:
      return l.cp();
    case Group::dp:
      return l.dp();
    case Group::dp_cp:
      return l.dp() * l.cp();
    case Group::tp_cp:
      return l.tp() * l.cp();
    case Group::ep:
      return l.ep();
    case Group::etp:
      return l.etp();
    case Group::edp:
      return l.edp();
    case Group::etp_ep:
      return l.etp() * l.ep();
    case Group::ep_edp:
      return l.ep() * l.edp();
    case Group::self:
      return 1;
    case Group::pp:
      return l.pp();
    case Group::embedding:
      return l.pp() > 1 && (f.stage == 0 || f.stage == l.pp() - 1) ? 2 : 1;
  }
  return -1;
}

const std::vector<ParallelSizes> kLayouts = {
    {.world = 1},
    {.world = 2, .tp = 2},
    {.world = 2, .ep = 2},
    {.world = 2, .pp = 2},
    {.world = 4, .tp = 2, .cp = 2, .ep = 4},
    {.world = 4, .pp = 2, .ep = 2},
    {.world = 4, .tp = 2, .etp = 2},
    {.world = 4, .cp = 2, .pp = 2},
    {.world = 8, .tp = 2, .cp = 2, .ep = 4},
    {.world = 8, .tp = 2, .pp = 2, .ep = 2, .etp = 2},
    {.world = 8, .pp = 2, .ep = 4},
    {.world = 8, .cp = 2, .pp = 2, .etp = 2},
    {.world = 8, .pp = 4, .ep = 2},
    {.world = 16, .tp = 2, .cp = 2, .pp = 2, .ep = 2, .etp = 2},
    {.world = 16, .pp = 4, .ep = 4},
    {.world = 16, .tp = 4, .ep = 2, .etp = 4},
    {.world = 16, .cp = 2, .ep = 8},
    {.world = 16, .tp = 2, .pp = 8},
};

std::string name_of(const ParallelSizes& z) {
  return fmt::format("world {} tp {} cp {} pp {} ep {} etp {}", z.world, z.tp, z.cp, z.pp, z.ep,
                     z.etp);
}

TEST(ParallelLayout, CoordinatesFollowTheFormulas) {
  for (const auto& z : kLayouts) {
    SCOPED_TRACE(name_of(z));
    const auto l = ParallelLayout::make(z);
    EXPECT_EQ(l.stage_size(), z.world / z.pp);
    EXPECT_EQ(l.dp() * l.tp() * l.cp() * l.pp(), z.world);
    EXPECT_EQ(l.edp() * l.etp() * l.ep() * l.pp(), z.world);
    std::set<std::tuple<int, int, int, int>> dense, expert;
    for (int r = 0; r < z.world; ++r) {
      const Formula f = formula(z, r);
      const auto c = l.coord(r);
      EXPECT_EQ(c, (ParallelLayout::Coord{f.stage, f.tp, f.cp, f.dp, f.etp, f.ep, f.edp})) << r;
      dense.insert({c.stage, c.tp, c.cp, c.dp});
      expert.insert({c.stage, c.etp, c.ep, c.edp});
    }
    // Both grids are bijections onto the ranks.
    EXPECT_EQ(int(dense.size()), z.world);
    EXPECT_EQ(int(expert.size()), z.world);
  }
}

TEST(ParallelLayout, GroupsMatchEnumerationAndPartitionTheWorld) {
  for (const auto& z : kLayouts) {
    const auto l = ParallelLayout::make(z);
    for (Group g : ParallelLayout::kAllGroups) {
      SCOPED_TRACE(name_of(z) + " group " + group_name(g));
      std::vector<int> owner(z.world, -1);  // a partition: each rank in exactly one group
      for (int r = 0; r < z.world; ++r) {
        std::vector<int> expected;
        for (int q = 0; q < z.world; ++q)
          if (same_group(g, formula(z, r), formula(z, q), z.pp)) expected.push_back(q);
        const auto members = l.group(g, r);
        ASSERT_EQ(members, expected) << "rank " << r;
        EXPECT_EQ(int(members.size()), expected_size(g, l, formula(z, r))) << "rank " << r;
        for (int m : members) {
          EXPECT_EQ(l.group(g, m), members) << "member " << m << " of rank " << r << "'s group";
          if (owner[m] == -1) owner[m] = members.front();
          EXPECT_EQ(owner[m], members.front()) << "rank " << m << " is in two groups";
        }
        if (g != Group::world && g != Group::pp && g != Group::embedding) {
          for (int m : members) EXPECT_EQ(l.coord(m).stage, l.coord(r).stage);  // within a stage
        }
      }
    }
  }
}

TEST(ParallelLayout, GroupOrderIsCoordinateOrder) {
  const auto l = ParallelLayout::make(16, 2, 2, 2, 2, 2);
  for (int r = 0; r < 16; ++r) {
    const auto c = l.coord(r);
    EXPECT_EQ(l.group(Group::tp, r).at(c.tp), r);
    EXPECT_EQ(l.group(Group::cp, r).at(c.cp), r);
    EXPECT_EQ(l.group(Group::dp, r).at(c.dp), r);
    EXPECT_EQ(l.group(Group::dp_cp, r).at(c.cp + l.cp() * c.dp), r);
    EXPECT_EQ(l.group(Group::ep, r).at(c.ep), r);
    EXPECT_EQ(l.group(Group::etp, r).at(c.etp), r);
    EXPECT_EQ(l.group(Group::edp, r).at(c.edp), r);
    EXPECT_EQ(l.group(Group::etp_ep, r).at(c.etp + l.etp() * c.ep), r);
    EXPECT_EQ(l.group(Group::pp, r).at(c.stage), r);
  }
}

TEST(ParallelLayout, KnownExamples) {
  // 8 ranks, TP2 CP2 DP2 with EP4: rank 5 = s 5 -> tp 1, cp 0, dp 1; etp 0, ep 1, edp 1.
  const auto l = ParallelLayout::make(8, 2, 2, 1, 4, 1);
  EXPECT_EQ(l.describe(), "TP2 CP2 DP2 PP1 | ETP1 EP4 EDP2");
  EXPECT_EQ(l.coord(5), (ParallelLayout::Coord{0, 1, 0, 1, 0, 1, 1}));
  EXPECT_EQ(l.group(Group::tp, 5), (std::vector<int>{4, 5}));
  EXPECT_EQ(l.group(Group::cp, 5), (std::vector<int>{5, 7}));
  EXPECT_EQ(l.group(Group::dp, 5), (std::vector<int>{1, 5}));
  EXPECT_EQ(l.group(Group::dp_cp, 5), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(l.group(Group::ep, 5), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(l.group(Group::edp, 5), (std::vector<int>{1, 5}));
  // 8 ranks, PP2 EP4: stage 1 holds ranks 4..7; the embedding group ties 1 and 5.
  const auto p = ParallelLayout::make(8, 1, 1, 2, 4, 1);
  EXPECT_EQ(p.describe(), "TP1 CP1 DP4 PP2 | ETP1 EP4 EDP1");
  EXPECT_EQ(p.group(Group::pp, 5), (std::vector<int>{1, 5}));
  EXPECT_EQ(p.group(Group::embedding, 1), (std::vector<int>{1, 5}));
  EXPECT_EQ(p.group(Group::ep, 5), (std::vector<int>{4, 5, 6, 7}));
  // With 4 stages the middle ones have no embedding partner.
  const auto q = ParallelLayout::make(8, 1, 1, 4, 1, 1);
  EXPECT_EQ(q.group(Group::embedding, 3), (std::vector<int>{3}));
  EXPECT_EQ(q.group(Group::embedding, 7), (std::vector<int>{1, 7}));
  EXPECT_EQ(ParallelLayout::make(4, 2, 1, 1, 4, 1).describe(), "TP2 CP1 DP2 PP1 | ETP1 EP4 EDP1");
}

TEST(ParallelLayout, FromConfig) {
  ParallelConfig cfg;
  cfg.tensor = 2;
  cfg.pipeline = 2;
  cfg.expert = 2;
  const auto l = ParallelLayout::from_config(cfg, 8);
  EXPECT_EQ(l.describe(), "TP2 CP1 DP2 PP2 | ETP1 EP2 EDP2");
  cfg.expert = int64_t(1) << 40;
  try {
    ParallelLayout::from_config(cfg, 8);
    ADD_FAILURE() << "no error for an expert size beyond int";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.expert="), std::string::npos) << e.what();
  }
}

TEST(ParallelLayout, SizesThatDoNotTileAreErrors) {
  auto message = [](ParallelSizes z) -> std::string {
    try {
      ParallelLayout::make(z);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  std::string m = message({.world = 6, .tp = 4});
  EXPECT_TRUE(has(m, "tensor 4") && has(m, "does not divide the world size 6")) << m;
  m = message({.world = 8, .tp = 2, .cp = 2, .pp = 4});
  EXPECT_TRUE(has(m, "= 16 does not divide the world size 8")) << m;
  m = message({.world = 8, .pp = 2, .ep = 8});
  EXPECT_TRUE(has(m, "expert 8") && has(m, "4 ranks of a pipeline stage")) << m;
  m = message({.world = 12, .pp = 2, .ep = 4, .etp = 1});
  EXPECT_TRUE(has(m, "does not divide the 6 ranks")) << m;
  m = message({.world = 4, .tp = 0});
  EXPECT_TRUE(has(m, ">= 1")) << m;
  m = message({.world = 0});
  EXPECT_TRUE(has(m, ">= 1")) << m;
  EXPECT_THROW(ParallelLayout::make(4, 1, 1, 1, 1, 1).coord(4), Error);
}

}  // namespace
}  // namespace origami
