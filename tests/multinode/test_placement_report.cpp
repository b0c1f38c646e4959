// The placement report: which groups span nodes, and the TP warning, for ranks filled onto
// nodes in slot order (mpirun --map-by slot).
#include <gtest/gtest.h>

#include "train/placement_report.h"

namespace origami {
namespace {

std::string joined(const PlacementReport& r) {
  std::string s;
  for (const auto& l : r.lines) s += l + "\n";
  return s;
}

TEST(PlacementReport, TpInsideNodesEpAcross) {
  const auto layout = ParallelLayout::make(4, /*tp=*/2, /*cp=*/1, /*pp=*/1, /*ep=*/4, /*etp=*/1);
  const auto rep = placement_report(layout, NodeMap::by_slot(4, 2));
  EXPECT_NE(joined(rep).find("4 ranks on 2 nodes (node0: ranks 0-1; node1: ranks 2-3)"),
            std::string::npos) << joined(rep);
  EXPECT_NE(joined(rep).find("within a node: tp; across nodes: dp (2 of 2 groups, up to 2 nodes), "
                             "ep (1 of 1 groups, up to 2 nodes)"),
            std::string::npos) << joined(rep);
  EXPECT_TRUE(rep.warnings.empty());
}

TEST(PlacementReport, WarnsWhenTpSpansNodes) {
  // 3 slots per node: TP2 (and ETP2) groups {2,3} straddle node0 and node1.
  const auto layout = ParallelLayout::make(6, 2, 1, 1, 3, 2);
  const auto rep = placement_report(layout, NodeMap::by_slot(6, 3));
  ASSERT_EQ(rep.warnings.size(), 2u) << joined(rep);  // tp and etp
  EXPECT_NE(rep.warnings[0].find("1 of 3 tp groups span nodes"), std::string::npos) << rep.warnings[0];
  EXPECT_NE(rep.warnings[1].find("etp groups span nodes"), std::string::npos) << rep.warnings[1];
}

TEST(PlacementReport, OneNodeHasNothingAcross) {
  const auto rep = placement_report(ParallelLayout::make(4, 2, 1, 2, 1, 1), NodeMap::by_slot(4, 8));
  EXPECT_NE(joined(rep).find("within a node: tp, pp, edp; across nodes: -"), std::string::npos)
      << joined(rep);
}

}  // namespace
}  // namespace origami
