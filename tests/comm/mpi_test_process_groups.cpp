// Multi-rank tests of ProcessGroups: for several layouts of the running world size, every group's
// communicator is checked with real collectives, the all-gathered world ranks of its members must
// equal ParallelLayout::group(), in order, and an allreduce must sum exactly those members.
#include <gtest/gtest.h>

#include <numeric>

#include "base/error.h"
#include "comm/parallel_layout.h"

namespace origami {
namespace {

const std::vector<ParallelSizes> kLayouts = {
    {.world = 1},
    {.world = 2, .tp = 2},
    {.world = 2, .ep = 2},
    {.world = 2, .pp = 2},
    {.world = 4, .tp = 2, .ep = 4},
    {.world = 4, .cp = 2, .pp = 2, .ep = 2},
    {.world = 4, .tp = 2, .ep = 2, .etp = 2},
    {.world = 8, .tp = 2, .cp = 2, .ep = 4},
    {.world = 8, .tp = 2, .pp = 2, .ep = 2, .etp = 2},
    {.world = 8, .pp = 2, .ep = 4},
    {.world = 8, .pp = 4, .ep = 2},
    {.world = 8, .cp = 2, .ep = 2, .etp = 4},
};

TEST(ProcessGroups, EveryGroupMatchesTheLayout) {
  auto world = make_mpi_world();
  const int rank = world->rank();
  int tested = 0;
  for (const auto& z : kLayouts) {
    if (z.world != world->size()) continue;
    const auto layout = ParallelLayout::make(z);
    SCOPED_TRACE(layout.describe());
    const auto groups = ProcessGroups::create(*world, layout);
    for (auto g : ParallelLayout::kAllGroups) {
      SCOPED_TRACE(group_name(g));
      const Communicator& comm = groups.get(g);
      const std::vector<int> members = layout.group(g, rank);
      EXPECT_EQ(comm.name(), group_name(g));
      ASSERT_EQ(comm.size(), int(members.size()));
      std::vector<int32_t> gathered(comm.size(), -1);
      int32_t mine = rank;
      comm.allgather(&mine, gathered.data(), 1, CommDType::i32);
      EXPECT_EQ(std::vector<int>(gathered.begin(), gathered.end()), members);
      EXPECT_EQ(comm.world_ranks(), members);
      EXPECT_EQ(members.at(comm.rank()), rank);
      EXPECT_EQ(comm.allreduce_scalar<int64_t>(rank),
                std::accumulate(members.begin(), members.end(), int64_t(0)));
    }
    ++tested;
  }
  if (tested == 0) GTEST_SKIP() << "no layout in the table for " << world->size() << " ranks";
}

TEST(ProcessGroups, WorldSizeMustMatchLayout) {
  auto world = make_mpi_world();
  const auto layout = ParallelLayout::make(world->size() * 2, 1, 1, 2, 1, 1);
  try {
    ProcessGroups::create(*world, layout);
    ADD_FAILURE() << "no error for a layout of another world size";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is for " + std::to_string(world->size() * 2)),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace origami
