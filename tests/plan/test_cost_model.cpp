// The cost model's communication terms against message sizes worked out by hand for one tiny
// layout, and the shape of the prediction (parts add up, the bubble comes from the dry run).
//
// Layout: world 4, TP2 EP2 (DP2, EDP2), micro-batch 4 x 128 tokens, global batch 16: 2
// micro-batches per step. Nc = 512 context rows, n = 256 sequence-parallel rows, H = 128, fp32.
#include <gtest/gtest.h>

#include "plan/cost_model.h"
#include "plan/layout_space.h"
#include "plan_test_config.h"

namespace origami {
namespace {

const CommTerm* find(const StepPrediction& p, const std::string& group, const std::string& what) {
  for (const CommTerm& t : p.terms)
    if (t.group == group && t.what.find(what) != std::string::npos) return &t;
  return nullptr;
}

Layout tp2_ep2() {
  return Layout{.tp = 2, .ep = 2, .micro_batch_size = 4, .dp = 2, .edp = 2, .micro_batches = 2};
}

TEST(CostModel, MessageSizesOfATinyLayout) {
  const Config cfg = apply_layout(test::tiny_config(), tp2_ep2());
  const StepPrediction p = predict_step(cfg, 4, test::test_cluster());

  // TP, attention: all-gather of [Nc, H] in and reduce-scatter out (forward), two all-gathers
  // (output gradient, input again) and one reduce-scatter (backward): 5 collectives of which a
  // rank sends half of 512 x 128 x 4 B = 131072 B; x 4 layers x 2 micro-batches.
  const CommTerm* tp = find(p, "tp", "attention");
  ASSERT_NE(tp, nullptr);
  EXPECT_EQ(tp->calls, 5 * 4 * 2);
  EXPECT_DOUBLE_EQ(tp->bytes, 5 * 131072.0 * 4 * 2);
  // At 1 GB/s without latency: bytes / 1e9 s.
  EXPECT_NEAR(tp->ms, tp->bytes / 1e6, 1e-9);

  // Embedding reduce-scatter + backward all-gather, LM head all-gather + backward reduce-scatter.
  const CommTerm* ends = find(p, "tp", "embedding");
  ASSERT_NE(ends, nullptr);
  EXPECT_DOUBLE_EQ(ends->bytes, 4 * 131072.0 * 2);

  // EP: the dispatcher sends n k H x 4 B = 256 x 2 x 128 x 4 = 262144 B per all-to-all, half
  // to the other rank; out and back in forward, again in backward: 4 per layer and micro-batch;
  // plus the counts (E/EP = 4 int64 per destination, 2 destinations: 64 B, half sent) twice.
  const CommTerm* ep = find(p, "ep", "dispatcher");
  ASSERT_NE(ep, nullptr);
  EXPECT_DOUBLE_EQ(ep->bytes, (4 * 131072.0 + 2 * 32.0) * 4 * 2);
  EXPECT_EQ(ep->calls, 6 * 4 * 2);

  // DP: dense parameters of a rank, fp32, all-reduced over DP2 (ring: 2 x (g-1)/g of the bytes).
  //   embedding + head 2 x 4096 x 128, final norm 128, per layer 2 H norms + q k v (2 + 2 x 1
  //   heads of 32) x H + proj H x 64 + router 8 x H = 25856; 4 layers.
  const double dense = 2 * 4096 * 128 + 128 + 4 * 25856;
  const CommTerm* dp = find(p, "dp_cp", "all-reduce");
  ASSERT_NE(dp, nullptr);
  EXPECT_DOUBLE_EQ(dp->bytes, 4 * dense);
  // Expert gradients over EDP2: 4 layers x E/EP = 4 experts x (fc1 2 x 256 + fc2 256) x H.
  const CommTerm* edp = find(p, "edp", "all-reduce");
  ASSERT_NE(edp, nullptr);
  EXPECT_DOUBLE_EQ(edp->bytes, 4.0 * 4 * 4 * 3 * 256 * 128);
  EXPECT_EQ(edp->calls, 2);  // 6 MiB in 4 MiB buckets
  // TP replicas: norms (2 H) and router (E H) per layer, all-reduced over TP2.
  const CommTerm* rep = find(p, "tp (replicas)", "");
  ASSERT_NE(rep, nullptr);
  EXPECT_DOUBLE_EQ(rep->bytes, 4.0 * 4 * (2 * 128 + 8 * 128));

  EXPECT_NEAR(p.step_ms, p.compute_ms + p.comm_ms + p.bubble_ms, 1e-9);
  EXPECT_EQ(p.bubble_ms, 0.0);  // one stage
  double sum = 0;
  for (const CommTerm& t : p.terms) sum += t.ms;
  EXPECT_NEAR(sum, p.comm_ms, 1e-6);
}

TEST(CostModel, GroupsThatSpanNodesUseTheInterNodeLink) {
  // DP2 over 4 ranks per node: TP2 x DP2 = ranks 0..3, one node; with 2 ranks a node the DP
  // group {0, 2} spans two nodes and runs at the inter-node 0.5 GB/s.
  const Config cfg = apply_layout(test::tiny_config(), tp2_ep2());
  ClusterSpec two = test::test_cluster();
  two.ranks_per_node = 2;
  const StepPrediction p = predict_step(cfg, 4, two);
  const CommTerm* dp = find(p, "dp_cp", "all-reduce");
  ASSERT_NE(dp, nullptr);
  EXPECT_TRUE(dp->spans_nodes);
  EXPECT_NEAR(dp->ms, dp->bytes / 0.5e6, 1e-9);
  EXPECT_FALSE(find(p, "tp", "attention")->spans_nodes);
  EXPECT_TRUE(group_spans_nodes({0, 2}, 2));
  EXPECT_FALSE(group_spans_nodes({0, 1}, 2));
}

TEST(CostModel, PipelineBubbleFromTheSchedule) {
  // PP2, 1F1B, 2 micro-batches: the dry run's idle time is > 0; with more micro-batches the
  // bubble's share falls.
  Layout pp2{.pp = 2, .micro_batch_size = 4, .dp = 2, .edp = 2, .micro_batches = 2};
  const Config few = apply_layout(test::tiny_config(), pp2);
  const StepPrediction a = predict_step(few, 4, test::test_cluster());
  EXPECT_GT(a.bubble_ms, 0.0);
  pp2.micro_batch_size = 1, pp2.micro_batches = 8;
  const StepPrediction b = predict_step(apply_layout(test::tiny_config(), pp2), 4,
                                        test::test_cluster());
  EXPECT_LT(b.bubble_ms / b.step_ms, a.bubble_ms / a.step_ms);
  // 1F1B on 2 stages: stage 0 runs F1 before B0 (and so on): every backward replays its
  // forward; stage 1 runs each backward right after its forward (replay_shares, per stage).
  EXPECT_DOUBLE_EQ(b.replay_share, 1.0);
  const CommTerm* p2p = find(b, "pp", "boundary");
  ASSERT_NE(p2p, nullptr);
  // [n, H] = 128 x 128 x 4 B per micro-batch, once each way: 8 micro-batches x 2.
  EXPECT_DOUBLE_EQ(p2p->bytes, 8 * 2 * 128.0 * 128 * 4);
}

// --imbalance sizes the busiest EP rank's dropless expert buffers too: the memory check grows by
// exactly the extra rows' bytes (recv [r,H], gathered and sorted [r,H] x ETP, sort_row, the
// experts' outputs and gradients [r,H] x 3 and h/act/dact/dh [r, 6 F_e] per MoE layer, for
// r = (imbalance - 1) n k more rows), and not at all for padded capacity buffers.
TEST(CostModel, ImbalanceGrowsTheDroplessExpertBuffers) {
  const Config cfg = apply_layout(test::tiny_config(), tp2_ep2());
  CostOptions skewed;
  skewed.routing_imbalance = 1.5;
  const double balanced = predict_step(cfg, 4, test::test_cluster()).memory_bytes;
  const double more = predict_step(cfg, 4, test::test_cluster(), skewed).memory_bytes;
  // n = 256 rows, k = 2, H = 128, F_e = 256, 4 MoE layers, ETP 1; fp32.
  const double r = 0.5 * 256 * 2;
  const double per_layer = r * 128 * (1 + 2 + 3) + r + r * 6 * 256;
  EXPECT_DOUBLE_EQ(more - balanced, 4.0 * 4 * per_layer);
  Config padded = cfg;
  padded.moe.capacity_factor = 1.0;
  padded.moe.pad_to_capacity = true;
  EXPECT_DOUBLE_EQ(predict_step(padded, 4, test::test_cluster(), skewed).memory_bytes,
                   predict_step(padded, 4, test::test_cluster()).memory_bytes);
}

}  // namespace
}  // namespace origami

namespace origami {
namespace {

// The compute kinds add up to compute_ms, and with 4 ranks on 2 shared cores each rank's compute
// (a rank's own CPU time in the cluster file) takes twice as long; communication does not change.
TEST(CostModel, ComputeKindsAddUpAndSharedCoresStretchThem) {
  const Config cfg = apply_layout(test::tiny_config(), tp2_ep2());
  const StepPrediction own = predict_step(cfg, 4, test::test_cluster());
  double sum = 0;
  for (const auto& [kind, ms] : own.compute_terms_ms) sum += ms;
  EXPECT_NEAR(sum, own.compute_ms, 1e-9 * own.compute_ms);
  ASSERT_EQ(own.compute_terms_ms.size(), std::size(kComputeKinds));
  EXPECT_GT(own.compute_terms_ms[1].second, 0.0);  // experts
  ClusterSpec shared = test::test_cluster();
  shared.compute.shared_cores = 2;
  const StepPrediction p = predict_step(cfg, 4, shared);
  EXPECT_NEAR(p.compute_ms, 2 * own.compute_ms, 1e-9 * own.compute_ms);
  EXPECT_NEAR(p.comm_ms, own.comm_ms, 1e-9 * own.comm_ms);
  for (size_t i = 0; i < p.compute_terms_ms.size(); ++i)
    EXPECT_NEAR(p.compute_terms_ms[i].second, 2 * own.compute_terms_ms[i].second, 1e-9);
}

// On shared cores a pipeline with one micro-batch runs its stages one after another, each with
// all the cores: the step is the mean stage's work, with no bubble, where a device per rank
// idles PP - 1 of every PP stage-times.
TEST(CostModel, OneMicroBatchPipelineOnSharedCoresHasNoBubble) {
  Layout pp4{.pp = 4, .micro_batch_size = 16, .dp = 1, .edp = 1, .micro_batches = 1};
  const Config cfg = apply_layout(test::tiny_config(), pp4);
  const StepPrediction own = predict_step(cfg, 4, test::test_cluster());
  EXPECT_GT(own.bubble_ms, 0.5 * own.step_ms);
  ClusterSpec shared = test::test_cluster();
  shared.compute.shared_cores = 1;  // 4 ranks on 1 core: one stage's rank can have it all
  const StepPrediction p = predict_step(cfg, 4, shared);
  EXPECT_NEAR(p.bubble_ms, 0.0, 1e-9);
  EXPECT_NEAR(p.step_ms, p.compute_ms + p.comm_ms, 1e-9 * p.step_ms);
}

}  // namespace
}  // namespace origami
