// Tests of FSSDP's plan (model/moe/fssdp_placement.h) alone, without ranks: even ownership, the
// EP placement, the cost rule and slot budget of plan_placement, block routing (local copy, then
// same node, then owner), determinism, and Alg. 2's re-sharding under fixed per-rank counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "model/moe/fssdp_placement.h"

namespace origami {
namespace {

std::vector<int> counts_per_rank(const std::vector<int>& owner, int ranks) {
  std::vector<int> c(static_cast<size_t>(ranks), 0);
  for (int o : owner) ++c[size_t(o)];
  return c;
}

TEST(FssdpPlacement, EvenOwnersSplitEachEpRanksExpertsOverItsReplicas) {
  // 8 experts, EP2 x EDP2: ranks are ep + 2 edp; EP rank 0 holds 0..3, split 0,1 | 2,3.
  EXPECT_EQ(even_owners(8, 2, 2), (std::vector<int>{0, 0, 2, 2, 1, 1, 3, 3}));
  EXPECT_EQ(even_owners(8, 1, 4), (std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3}));
  // Fewer experts per EP rank than replicas: some ranks own none.
  const auto sparse = even_owners(4, 4, 2);  // 8 ranks, 1 expert each EP rank
  EXPECT_EQ(counts_per_rank(sparse, 8), (std::vector<int>{1, 1, 1, 1, 0, 0, 0, 0}));
}

TEST(FssdpPlacement, OwnerPlacementSendsEveryBlockToTheOwner) {
  const auto owner = even_owners(8, 2, 2);
  const FssdpPlacement p = owner_placement(4, 8, owner);
  EXPECT_EQ(p.copies(), 0);
  for (int64_t e = 0; e < 8; ++e)
    for (int d = 0; d < 4; ++d) EXPECT_EQ(p.route_of(d, e), owner[size_t(e)]);
  EXPECT_EQ(p.resident(2), (std::vector<int64_t>{2, 3}));
}

TEST(FssdpPlacement, EpPlacementIsExpertParallelismOnEveryReplicaGroup) {
  const auto owner = even_owners(8, 2, 2);
  const FssdpPlacement p = ep_placement(8, 2, 2, owner);
  for (int64_t e = 0; e < 8; ++e) {
    const int home = int(e / 4);
    EXPECT_EQ(p.holders[size_t(e)], (std::vector<int>{home, home + 2})) << e;
    for (int d = 0; d < 4; ++d) EXPECT_EQ(p.route_of(d, e), home + 2 * (d / 2)) << d << " " << e;
    EXPECT_TRUE(p.holds(owner[size_t(e)], e));
  }
  EXPECT_EQ(p.copies(), 8);  // each expert once more than its owner
  EXPECT_EQ(p.resident(1), (std::vector<int64_t>{4, 5, 6, 7}));
}

FssdpPlanInputs skewed(int ranks, int64_t experts) {
  FssdpPlanInputs in{.ranks = ranks, .experts = experts};
  in.load.assign(size_t(ranks) * size_t(experts), 1.0);
  for (int d = 0; d < ranks; ++d) in.load[size_t(d) * size_t(experts) + 0] = 1000.0;  // expert 0 hot
  in.load[size_t(1) * size_t(experts) + 5] = 600.0;  // rank 1 also likes expert 5 (owner 2)
  in.owner = even_owners(experts, 1, ranks);
  in.node_of.assign(size_t(ranks), 0);
  in.max_replicas_per_rank = 1;
  in.expert_bytes = 1000.0 * 4;  // a copy pays above 2 x 4000 / (4 x 4) = 500 tokens
  in.token_bytes = 4.0;
  return in;
}

TEST(FssdpPlacement, CopiesGoWhereTheTokensOutweighTheExpertsBytes) {
  const FssdpPlacement p = plan_placement(skewed(4, 8));
  // Expert 0 (owner 0) is copied to every other rank (1000 tokens each > 500); rank 1's one slot
  // goes to expert 0 (larger benefit), so expert 5 (600 tokens from rank 1) gets none.
  EXPECT_EQ(p.holders[0], (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(p.holders[5], (std::vector<int>{2}));  // its owner only (even_owners: 4,5 -> rank 2)
  for (int64_t e = 1; e < 8; ++e) EXPECT_EQ(p.holders[size_t(e)].size(), 1u) << e;
  EXPECT_EQ(p.copies(), 3);
  EXPECT_EQ(p.replicated(), (std::vector<int64_t>{0}));
  // Every source keeps its expert-0 rows local; others go to the owner.
  for (int d = 0; d < 4; ++d) {
    EXPECT_EQ(p.route_of(d, 0), d);
    EXPECT_EQ(p.route_of(d, 5), p.owner[5]);
  }
  // With two slots rank 1 holds both.
  auto in = skewed(4, 8);
  in.max_replicas_per_rank = 2;
  EXPECT_EQ(plan_placement(in).holders[5], (std::vector<int>{1, 2}));
  EXPECT_TRUE(plan_placement(in).holds(1, 0));
  // No budget, no copies; too dear, no copies.
  in.max_replicas_per_rank = 0;
  EXPECT_EQ(plan_placement(in).copies(), 0);
  in = skewed(4, 8);
  in.expert_bytes = 1e9;
  EXPECT_EQ(plan_placement(in).copies(), 0);
  // Rematerialisation gathers twice: 3 x 4000 / 16 = 750 tokens, expert 5's 600 do not pay.
  in = skewed(4, 8);
  in.max_replicas_per_rank = 2;
  in.rematerialize = true;
  EXPECT_EQ(plan_placement(in).copies(), 3);
}

TEST(FssdpPlacement, BlocksGoToTheLocalCopyThenTheNodeThenTheOwner) {
  // 4 ranks on 2 nodes; expert 0 owned by rank 0, copied to rank 2 (node 1).
  FssdpPlanInputs in{.ranks = 4, .experts = 4};
  in.load = {0, 1, 1, 1,  /*rank 1*/ 10, 1, 1, 1,  /*rank 2*/ 900, 1, 1, 1,  /*rank 3*/ 10, 1, 1, 1};
  in.owner = even_owners(4, 1, 4);  // expert e on rank e
  in.node_of = {0, 0, 1, 1};
  in.max_replicas_per_rank = 1;
  in.expert_bytes = 4000;
  in.token_bytes = 4;
  const FssdpPlacement p = plan_placement(in);
  ASSERT_EQ(p.holders[0], (std::vector<int>{0, 2}));
  EXPECT_EQ(p.route_of(2, 0), 2);  // local copy
  EXPECT_EQ(p.route_of(3, 0), 2);  // a holder on its node
  EXPECT_EQ(p.route_of(1, 0), 0);  // on node 0: the owner
  EXPECT_EQ(p.route_of(3, 1), 1);  // no copy anywhere: the owner
  // On one node the non-holders' blocks spread over the holders by assigned rows.
  in.node_of = {0, 0, 0, 0};
  const FssdpPlacement q = plan_placement(in);
  EXPECT_EQ(q.route_of(1, 0), 0);  // holder 0 has 0 rows, holder 2 has 900
  EXPECT_EQ(q.route_of(3, 0), 0);  // still fewer on 0 (10 < 900)
}

TEST(FssdpPlacement, PlansAreDeterministicAndEveryBlockGoesToAHolder) {
  auto in = skewed(8, 16);
  in.max_replicas_per_rank = 3;
  for (int d = 0; d < 8; ++d)
    for (int64_t e = 0; e < 16; ++e) in.load[size_t(d * 16 + e)] += double((d * 7 + e * 13) % 900);
  in.node_of = {0, 0, 0, 0, 1, 1, 1, 1};
  const FssdpPlacement a = plan_placement(in), b = plan_placement(in);
  EXPECT_EQ(a.holders, b.holders);
  EXPECT_EQ(a.route, b.route);
  EXPECT_GT(a.copies(), 0);
  std::vector<int> per_rank(8, 0);
  for (int64_t e = 0; e < 16; ++e) {
    EXPECT_TRUE(a.holds(a.owner[size_t(e)], e));
    for (int h : a.holders[size_t(e)])
      if (h != a.owner[size_t(e)]) ++per_rank[size_t(h)];
    for (int d = 0; d < 8; ++d) EXPECT_TRUE(a.holds(a.route_of(d, e), e)) << d << " " << e;
  }
  for (int c : per_rank) EXPECT_LE(c, 3);
}

TEST(FssdpPlacement, ReshardKeepsEachRanksCountAndBalancesTheColdExperts) {
  // 4 ranks, 8 experts, 2 each. Expert loads (total over sources): 0 hot (replicated), then
  // 7 > 6 > ... so the cold ones are dealt to the least-loaded rank in turn (LPT).
  const int D = 4;
  const int64_t E = 8;
  std::vector<double> load(size_t(D) * size_t(E), 0.0);
  const double total[8] = {5000, 10, 20, 30, 40, 50, 60, 70};
  for (int64_t e = 0; e < E; ++e) load[size_t(e)] = total[e];  // all from source 0
  const auto owner = even_owners(E, 1, D);
  const std::vector<int> node_of(D, 0);
  const auto next = reshard_owners(load, owner, node_of, /*hot=*/{0});
  EXPECT_EQ(counts_per_rank(next, D), counts_per_rank(owner, D));
  // Cold by load 7,6,5,4 go to ranks 0,1,2,3; then 3 goes to the least-loaded (rank 3: 40), 2
  // to rank 2 (50), 1 to rank 1 (60); the hot expert 0 fills the last free slot (rank 0).
  EXPECT_EQ(next[7], 0);
  EXPECT_EQ(next[6], 1);
  EXPECT_EQ(next[5], 2);
  EXPECT_EQ(next[4], 3);
  EXPECT_EQ(next[3], 3);
  EXPECT_EQ(next[2], 2);
  EXPECT_EQ(next[1], 1);
  EXPECT_EQ(next[0], 0);
  EXPECT_EQ(reshard_owners(load, owner, node_of, {0}), next);  // deterministic
  // Two nodes: the heaviest cold experts alternate between nodes first.
  const auto two = reshard_owners(load, owner, {0, 0, 1, 1}, {0});
  EXPECT_EQ(counts_per_rank(two, D), counts_per_rank(owner, D));
  EXPECT_NE(two[7] / 2, two[6] / 2) << "the two heaviest cold experts share a node";
}

}  // namespace
}  // namespace origami
