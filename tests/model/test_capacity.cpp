// Capacity-based routing: C, the dropped count against a direct count, and which slots each
// policy keeps.
#include <gtest/gtest.h>

#include <random>

#include "model/moe/capacity.h"

namespace origami {
namespace {

TEST(Capacity, FormulaIsCeilOfTokensTimesKOverEExpertsTimesFactor) {
  EXPECT_EQ(expert_capacity(16, 2, 8, 1.0), 4);
  EXPECT_EQ(expert_capacity(10, 2, 8, 1.0), 3);    // 2.5 -> 3
  EXPECT_EQ(expert_capacity(16, 2, 8, 1.25), 5);
  EXPECT_EQ(expert_capacity(16, 1, 4, 0.5), 2);
}

TEST(Capacity, DroppedCountMatchesADirectCount) {
  std::mt19937 gen(3);
  const int64_t N = 50, k = 2, E = 6, C = 9;
  std::vector<int32_t> experts(N * k);
  std::vector<float> weights(N * k);
  for (int64_t t = 0; t < N; ++t) {
    // Skewed routing: expert 0 is popular; two distinct experts per token.
    int32_t a = gen() % 3 == 0 ? int32_t(gen() % E) : 0;
    int32_t b = int32_t((a + 1 + gen() % (E - 1)) % E);
    experts[t * k] = a;
    experts[t * k + 1] = b;
    weights[t * k] = 0.6f + 0.001f * float(t % 7);
    weights[t * k + 1] = 0.4f - 0.001f * float(t % 5);
  }
  std::vector<int64_t> before(E, 0);
  for (int32_t e : experts) before[e]++;
  int64_t direct = 0;
  for (int64_t c : before) direct += std::max<int64_t>(c - C, 0);
  ASSERT_GT(direct, 0) << "the routing must overflow some expert for this test to mean anything";
  for (const char* policy : {"probs", "position"}) {
    std::vector<int32_t> kept = experts;
    EXPECT_EQ(drop_over_capacity(kept, weights, N, k, E, C, policy), direct) << policy;
    std::vector<int64_t> after(E, 0);
    int64_t minus = 0;
    for (int32_t e : kept) e >= 0 ? after[e]++ : minus++;
    EXPECT_EQ(minus, direct);
    for (int64_t e = 0; e < E; ++e) EXPECT_EQ(after[e], std::min(before[e], C)) << policy << " " << e;
  }
}

TEST(Capacity, PoliciesKeepHighestWeightOrEarliestSlots) {
  // Four tokens, top-1, all to expert 1, capacity 2.
  std::vector<int32_t> experts{1, 1, 1, 1};
  const std::vector<float> weights{0.1f, 0.9f, 0.5f, 0.9f};
  auto by_prob = experts;
  drop_over_capacity(by_prob, weights, 4, 1, 2, 2, "probs");
  EXPECT_EQ(by_prob, (std::vector<int32_t>{-1, 1, -1, 1}));  // the two 0.9s (tie: earlier first)
  auto by_pos = experts;
  drop_over_capacity(by_pos, weights, 4, 1, 2, 2, "position");
  EXPECT_EQ(by_pos, (std::vector<int32_t>{1, 1, -1, -1}));
}

}  // namespace
}  // namespace origami
