// Tests of the schedule tables alone (pipeline/schedule.h), no ranks: over every valid shape,
// each (micro-batch, chunk) runs once forward and once backward on the rank holding it, forward
// first, backwards ascending per chunk, sends and receives in the counts the stages need; the
// 1F1B in-flight bound, GPipe's all-in-flight, Megatron's warmup counts and its PP2 g3 m5 v2
// table; the 1-stage degenerate list; and the refusals, each naming its config key.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "config/error_matchers.h"
#include "pipeline/schedule.h"
#include "schedule_shapes.h"

namespace origami {
namespace {

using testing::describe;
using testing::valid_shapes;

std::vector<Action> computes(const std::vector<Action>& list) {
  std::vector<Action> out;
  std::copy_if(list.begin(), list.end(), std::back_inserter(out), is_compute);
  return out;
}

TEST(PipelineSchedule, KindsParseFromTheirConfigSpelling) {
  for (ScheduleKind k : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::interleaved})
    EXPECT_EQ(parse_schedule_kind(schedule_kind_name(k)), k);
  EXPECT_STREQ(schedule_kind_name(ScheduleKind::one_f_one_b), "1f1b");
  EXPECT_ERROR_HAS(parse_schedule_kind("1F1B"),
                   {"parallel.pipeline_schedule", "'1F1B'", "1f1b, interleaved, gpipe"});
}

TEST(PipelineSchedule, ActionsPrintLikeTorchsIR) {
  EXPECT_EQ(to_string(Action{Action::forward, 3, 1, -1}), "F3c1");
  EXPECT_EQ(to_string(Action{Action::backward, 0, 0, -1}), "B0c0");
  EXPECT_EQ(to_string(Action{Action::send_activation, 3, 1, 2}), "SEND_F3c1->2");
  EXPECT_EQ(to_string(Action{Action::recv_activation, 3, 1, 0}), "RECV_F3c1<-0");
  EXPECT_EQ(to_string(Action{Action::send_grad, 3, 1, 0}), "SEND_B3c1->0");
  EXPECT_EQ(to_string(Action{Action::recv_grad, 3, 1, 2}), "RECV_B3c1<-2");
  const std::string all = "F3c1 B0c0 SEND_F3c1->2 RECV_F3c1<-0 SEND_B3c1->0 RECV_B12c1<-2";
  EXPECT_EQ(to_string(parse_actions(all)), all);
  EXPECT_ERROR_HAS(parse_actions("F0c0 SEND_F0c0<-1"), {"pipeline action 'SEND_F0c0<-1'"});
  EXPECT_ERROR_HAS(parse_actions("W0c0"), {"'W0c0'"});
  EXPECT_ERROR_HAS(parse_actions("F0c0x"), {"'F0c0x'"});
}

TEST(PipelineSchedule, TheSweepCoversEveryKindAndRefusesSomeShapes) {
  const auto shapes = valid_shapes();
  std::map<ScheduleKind, int> per_kind;
  for (const auto& s : shapes) ++per_kind[s.kind];
  // gpipe: every (pp, v, m) = 4*3*16; 1f1b: v = 1 only; interleaved: v > 1 and the m rules
  EXPECT_EQ(per_kind[ScheduleKind::gpipe], 4 * 3 * 16);
  EXPECT_EQ(per_kind[ScheduleKind::one_f_one_b], 4 * 16);
  EXPECT_GT(per_kind[ScheduleKind::interleaved], 0);
  EXPECT_LT(per_kind[ScheduleKind::interleaved], 4 * 2 * 16 * 3);
}

TEST(PipelineSchedule, EveryMicroBatchChunkRunsOnceForwardThenOnceBackward) {
  for (const ScheduleShape& s : valid_shapes()) {
    const auto lists = build_all_schedules(s);
    ASSERT_EQ(static_cast<int>(lists.size()), s.pp) << describe(s);
    for (int r = 0; r < s.pp; ++r) {
      SCOPED_TRACE(describe(s) + " rank " + std::to_string(r) + ": " + to_string(lists[r]));
      std::map<std::pair<int, int>, int> fwd_at, bwd_at;  // (mb, chunk) -> position
      for (size_t i = 0; i < lists[r].size(); ++i) {
        const Action& a = lists[r][i];
        if (!is_compute(a)) continue;
        EXPECT_EQ(a.peer, -1);
        auto& at = a.op == Action::forward ? fwd_at : bwd_at;
        EXPECT_TRUE(at.emplace(std::make_pair(a.micro_batch, a.chunk), i).second)
            << to_string(a) << " twice";
      }
      EXPECT_EQ(static_cast<int>(fwd_at.size()), s.m * s.v);
      EXPECT_EQ(static_cast<int>(bwd_at.size()), s.m * s.v);
      for (const auto& [id, at] : bwd_at) {
        ASSERT_TRUE(fwd_at.count(id)) << "B" << id.first << "c" << id.second << " without F";
        EXPECT_LT(fwd_at[id], at) << "B" << id.first << "c" << id.second << " before its F";
      }
      EXPECT_EQ(static_cast<int>(computes(lists[r]).size()), 2 * s.m * s.v);
    }
  }
}

TEST(PipelineSchedule, BackwardsComeOutAscendingPerChunkOnEveryRank) {
  for (const ScheduleShape& s : valid_shapes())
    for (int r = 0; r < s.pp; ++r) {
      std::vector<int> last(s.v, -1);
      for (const Action& a : compute_order(s, r))
        if (a.op == Action::backward) {
          EXPECT_EQ(a.micro_batch, last[a.chunk] + 1) << describe(s) << " rank " << r;
          last[a.chunk] = a.micro_batch;
        }
    }
}

TEST(PipelineSchedule, PlacingTransfersNeverReordersTheComputes) {
  for (const ScheduleShape& s : valid_shapes()) {
    const auto lists = build_all_schedules(s);
    for (int r = 0; r < s.pp; ++r)
      EXPECT_EQ(computes(lists[r]), compute_order(s, r)) << describe(s) << " rank " << r;
  }
}

// Each rank sends the output of every chunk but the last stage's, and the input grad of every
// chunk but stage 0's; each send has a receive of the same thing on the neighbour.
TEST(PipelineSchedule, TransfersAreTheOnesTheStagesNeed) {
  for (const ScheduleShape& s : valid_shapes()) {
    const auto lists = build_all_schedules(s);
    const int stages = num_virtual_stages(s);
    std::map<Action::Op, int> total;
    for (int r = 0; r < s.pp; ++r) {
      std::map<Action::Op, int> count;
      for (const Action& a : lists[r]) ++count[a.op];
      int not_last = 0, not_first = 0;
      for (int c = 0; c < s.v; ++c) {
        not_last += virtual_stage(s, r, c) < stages - 1;
        not_first += virtual_stage(s, r, c) > 0;
      }
      const int boundaries_out = s.pp > 1 ? s.m * not_last : 0;
      const int boundaries_in = s.pp > 1 ? s.m * not_first : 0;
      EXPECT_EQ(count[Action::send_activation], boundaries_out) << describe(s) << " rank " << r;
      EXPECT_EQ(count[Action::recv_grad], boundaries_out) << describe(s) << " rank " << r;
      EXPECT_EQ(count[Action::recv_activation], boundaries_in) << describe(s) << " rank " << r;
      EXPECT_EQ(count[Action::send_grad], boundaries_in) << describe(s) << " rank " << r;
      for (const auto& [op, n] : count) total[op] += n;
    }
    const int transfers = s.pp > 1 ? s.m * (stages - 1) : 0;
    for (Action::Op op :
         {Action::send_activation, Action::recv_activation, Action::send_grad, Action::recv_grad})
      EXPECT_EQ(total[op], transfers) << describe(s);
  }
}

TEST(PipelineSchedule, OneFOneBHoldsAtMostMinOfStagesLeftAndMicroBatches) {
  for (const ScheduleShape& s : valid_shapes()) {
    if (s.kind != ScheduleKind::one_f_one_b) continue;
    for (int r = 0; r < s.pp; ++r) {
      const int bound = std::min(s.pp - r, s.m);
      EXPECT_LE(max_in_flight(build_schedule(s, r)), bound) << describe(s) << " rank " << r;
      EXPECT_EQ(max_in_flight(compute_order(s, r)), bound) << describe(s) << " rank " << r;
    }
    if (s.m >= s.pp) EXPECT_EQ(max_in_flight(build_schedule(s, 0)), s.pp) << describe(s);
  }
}

TEST(PipelineSchedule, GpipeHoldsEveryMicroBatch) {
  for (const ScheduleShape& s : valid_shapes())
    if (s.kind == ScheduleKind::gpipe)
      for (int r = 0; r < s.pp; ++r)
        EXPECT_EQ(max_in_flight(build_schedule(s, r)), s.m * s.v) << describe(s) << " rank " << r;
}

// Megatron's warmup: min(pp - rank - 1, m) (1F1B), (pp - rank - 1) * 2 + (v - 1) * g capped at
// m v (interleaved); the steady phase then runs one more forward before the first backward.
TEST(PipelineSchedule, WarmupForwardsFollowMegatron) {
  for (const ScheduleShape& s : valid_shapes()) {
    if (s.kind == ScheduleKind::gpipe) continue;
    const int total = s.m * s.v;
    for (int r = 0; r < s.pp; ++r) {
      const int warmup = s.kind == ScheduleKind::one_f_one_b
                             ? std::min(s.pp - r - 1, s.m)
                             : std::min((s.pp - r - 1) * 2 + (s.v - 1) * group_size(s), total);
      const auto order = compute_order(s, r);
      const auto first_b = std::find_if(order.begin(), order.end(),
                                        [](const Action& a) { return a.op == Action::backward; });
      EXPECT_EQ(first_b - order.begin(), std::min(warmup + 1, total))
          << describe(s) << " rank " << r;
    }
  }
}

TEST(PipelineSchedule, InterleavedFollowsMegatronsTableForPP2G3M5V2) {
  const ScheduleShape s{2, 2, 5, ScheduleKind::interleaved, 3};
  for (int r = 0; r < s.pp; ++r) {
    std::vector<int> f_mb, f_chunk, b_mb, b_chunk;
    for (const Action& a : compute_order(s, r)) {
      (a.op == Action::forward ? f_mb : b_mb).push_back(a.micro_batch);
      (a.op == Action::forward ? f_chunk : b_chunk).push_back(a.chunk);
    }
    EXPECT_EQ(f_mb, (std::vector<int>{0, 1, 2, 0, 1, 2, 3, 4, 3, 4})) << "rank " << r;
    EXPECT_EQ(f_chunk, (std::vector<int>{0, 0, 0, 1, 1, 1, 0, 0, 1, 1})) << "rank " << r;
    EXPECT_EQ(b_mb, (std::vector<int>{0, 1, 2, 0, 1, 2, 3, 4, 3, 4})) << "rank " << r;
    EXPECT_EQ(b_chunk, (std::vector<int>{1, 1, 1, 0, 0, 0, 1, 1, 0, 0})) << "rank " << r;
  }
}

TEST(PipelineSchedule, OneFOneBOnTwoStagesReadsLikeMegatron) {
  const ScheduleShape s{2, 1, 3, ScheduleKind::one_f_one_b};
  EXPECT_EQ(to_string(compute_order(s, 0)), "F0c0 F1c0 B0c0 F2c0 B1c0 B2c0");
  EXPECT_EQ(to_string(compute_order(s, 1)), "F0c0 B0c0 F1c0 B1c0 F2c0 B2c0");
  EXPECT_EQ(to_string(build_schedule(s, 0)),
            "F0c0 SEND_F0c0->1 F1c0 SEND_F1c0->1 RECV_B0c0<-1 B0c0 F2c0 SEND_F2c0->1 "
            "RECV_B1c0<-1 B1c0 RECV_B2c0<-1 B2c0");
}

TEST(PipelineSchedule, OneStageIsForwardBackwardPerMicroBatchWithoutTransfers) {
  const ScheduleShape s{1, 1, 4, ScheduleKind::one_f_one_b};
  EXPECT_EQ(to_string(build_schedule(s, 0)), "F0c0 B0c0 F1c0 B1c0 F2c0 B2c0 F3c0 B3c0");
  for (const ScheduleShape& any : valid_shapes())
    if (any.pp == 1)
      for (const Action& a : build_schedule(any, 0)) EXPECT_TRUE(is_compute(a)) << describe(any);
}

TEST(PipelineSchedule, InterleavedRefusesMicroBatchCountsItCannotRun) {
  // Megatron's unit test: PP4 VP2 m=7 raises; the nearest counts that work are multiples of 4.
  EXPECT_ERROR_HAS(check_schedule_shape({4, 2, 7, ScheduleKind::interleaved}),
                   {"parallel.virtual_pipeline=2", "parallel.pipeline=4", "7 micro-batches",
                    "7 % 4 = 3", "training.global_batch_size", "nearest that work: 4 or 8"});
  EXPECT_ERROR_HAS(build_schedule({4, 2, 7, ScheduleKind::interleaved}, 0),
                   {"parallel.virtual_pipeline"});
  // g = 6 > pp = 4: m % 6 in {0, 4, 5} works, so 9 (9 % 6 = 3) is refused and 6, 10 offered
  EXPECT_ERROR_HAS(check_schedule_shape({4, 2, 9, ScheduleKind::interleaved, 6}),
                   {"9 % 6 = 3", "nearest that work: 6 or 10"});
  EXPECT_NO_THROW(check_schedule_shape({4, 2, 10, ScheduleKind::interleaved, 6}));
  EXPECT_ERROR_HAS(check_schedule_shape({4, 2, 3, ScheduleKind::interleaved}),
                   {"parallel.virtual_pipeline=2", "cannot run 3", "at least the group size 4",
                    "nearest that work: 4"});
  EXPECT_ERROR_HAS(check_schedule_shape({4, 2, 8, ScheduleKind::interleaved, 3}),
                   {"group size 3", "smaller than parallel.pipeline=4"});
}

TEST(PipelineSchedule, KindAndChunkCountMustAgree) {
  EXPECT_ERROR_HAS(
      check_schedule_shape({2, 2, 4, ScheduleKind::one_f_one_b}),
      {"parallel.pipeline_schedule=1f1b", "parallel.virtual_pipeline=2", "interleaved"});
  EXPECT_ERROR_HAS(check_schedule_shape({2, 1, 4, ScheduleKind::interleaved}),
                   {"parallel.pipeline_schedule=interleaved", "parallel.virtual_pipeline > 1"});
  EXPECT_ERROR_HAS(check_schedule_shape({2, 1, 0, ScheduleKind::gpipe}),
                   {"at least one micro-batch", "training.micro_batch_size"});
  EXPECT_ERROR_HAS(check_schedule_shape({0, 1, 4, ScheduleKind::gpipe}), {"parallel.pipeline=0"});
  EXPECT_ERROR_HAS(build_schedule({2, 1, 4, ScheduleKind::gpipe}, 2),
                   {"pipeline rank 2", "parallel.pipeline=2"});
}

}  // namespace
}  // namespace origami
