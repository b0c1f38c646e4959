// expert_rows(): the rows the MoE layer reserves at start-up and the memory estimate sizes its
// expert buffers for. The EP bound is checked against routings counted directly: the busiest
// rank under a worst-case routing receives exactly the bound, and no random routing exceeds it.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "model/moe/capacity.h"
#include "model/moe/expert_rows.h"

namespace origami {
namespace {

MoeConfig dropless(double reserve = 1.0) {
  MoeConfig m;
  m.num_experts = 8;
  m.top_k = 2;
  m.dropless_reserve = reserve;
  return m;
}

// [EP source][token][slot]: the experts every source rank's tokens pick.
using Routing = std::vector<std::vector<std::vector<int>>>;

// Rows each EP rank receives under `experts`.
std::vector<int64_t> received_per_rank(const Routing& experts, int64_t E, int ep) {
  std::vector<int64_t> rows(size_t(ep), 0);
  for (const auto& source : experts)
    for (const auto& token : source)
      for (int e : token) rows[size_t(e / (E / ep))]++;
  return rows;
}

TEST(ExpertRows, DroplessHoldsTheLargerOfTheReserveAndTheImbalance) {
  const int64_t n = 64;  // 128 balanced rows
  EXPECT_EQ(expert_rows(dropless(), n, 8, 4, 1, 1.0).received, 128);
  EXPECT_EQ(expert_rows(dropless(), n, 8, 4, 1, 1.5).received, 192);
  EXPECT_EQ(expert_rows(dropless(2.5), n, 8, 4, 1, 1.5).received, 320);
  EXPECT_EQ(expert_rows(dropless(1.25), n, 8, 4, 1, 1.75).received, 224);
  const ExpertRows r = expert_rows(dropless(1.5), n, 8, 4, 2, 1.0);
  EXPECT_EQ(r.local, 128);  // what this rank sends does not depend on the balance
  EXPECT_EQ(r.received, 192);
  EXPECT_EQ(r.computed, 384);  // x ETP after the gather
}

TEST(ExpertRows, TheEpBoundIsWhatAWorstCaseRoutingSendsOneRank) {
  const int64_t n = 16, E = 8, k = 2;
  std::mt19937 gen(5);
  for (int ep : {1, 2, 4, 8}) {
    const int64_t local = E / ep;
    // Worst case for rank 0: every token's first min(k, E/EP) choices are rank 0's experts.
    Routing worst(static_cast<size_t>(ep));
    for (auto& source : worst)
      for (int64_t t = 0; t < n; ++t) {
        std::vector<int> choice;
        for (int64_t s = 0; s < k; ++s)
          choice.push_back(int(s < local ? s : local + (s - local)));  // distinct experts
        source.push_back(choice);
      }
    const int64_t most = received_per_rank(worst, E, ep)[0];
    // Any imbalance past the bound is held to it: 64 x balanced is more than any routing sends.
    EXPECT_EQ(expert_rows(dropless(), n, E, ep, 1, 64.0).received, most) << "EP" << ep;
    // Random routings (k distinct experts a token) never exceed it on any rank.
    for (int trial = 0; trial < 50; ++trial) {
      Routing rnd(static_cast<size_t>(ep));
      for (auto& source : rnd)
        for (int64_t t = 0; t < n; ++t) {
          std::vector<int> ids(static_cast<size_t>(E));
          std::iota(ids.begin(), ids.end(), 0);
          std::shuffle(ids.begin(), ids.end(), gen);
          source.emplace_back(ids.begin(), ids.begin() + k);
        }
      for (int64_t rows : received_per_rank(rnd, E, ep)) EXPECT_LE(rows, most) << "EP" << ep;
    }
  }
  // EP1: one rank computes every slot, always exactly the balanced count.
  EXPECT_EQ(expert_rows(dropless(4.0), n, E, 1, 1, 3.0).received, n * k);
}

TEST(ExpertRows, FssdpHasNoEpBound) {
  MoeConfig m = dropless(3.0);
  m.fssdp.enabled = true;  // placement by load: one rank may compute any expert's copies
  EXPECT_EQ(expert_rows(m, 16, 8, 8, 1, 1.0).received, 96);
}

TEST(ExpertRows, CapacityStopsAtTheFactorAndPaddingIsExact) {
  MoeConfig m = dropless(3.0);
  m.capacity_factor = 1.25;
  EXPECT_EQ(expert_rows(m, 64, 8, 4, 1, 2.0).received, 160);  // 128 x 1.25
  m.dropless_reserve = 1.0;
  EXPECT_EQ(expert_rows(m, 64, 8, 4, 1, 1.1).received, 141);  // ceil(128 x 1.1)
  m.pad_to_capacity = true;
  const int64_t C = expert_capacity(64, 2, 8, 1.25);
  const ExpertRows r = expert_rows(m, 64, 8, 4, 2, 3.0);
  EXPECT_EQ(r.local, 8 * C);
  EXPECT_EQ(r.received, 8 * C);
  EXPECT_EQ(r.computed, 16 * C);
}

}  // namespace
}  // namespace origami
