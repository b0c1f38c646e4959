// Tests of the dry run (pipeline/schedule_sim.h): no valid shape deadlocks under rendezvous or
// eager sends, whatever the costs the lists run under, and every send meets exactly one receive;
// lists broken on purpose are reported with the stuck ranks and actions (the checker can fail);
// the measured bubble of 1F1B and GPipe is exactly (p-1)/(m+p-1) of the wall time, interleaved
// measures (p-1)/(v m + p - 1) and beats 1F1B at the same p and m; the JSON timelines behind
// docs/figures/pipeline_schedules.png (tools/plot_pipeline_schedule.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "config/error_matchers.h"
#include "pipeline/schedule_sim.h"
#include "schedule_shapes.h"

namespace origami {
namespace {

using testing::describe;
using testing::valid_shapes;

constexpr SendModel kModels[] = {SendModel::rendezvous, SendModel::eager};

int count_sends(const std::vector<std::vector<Action>>& lists) {
  int n = 0;
  for (const auto& l : lists) n += std::count_if(l.begin(), l.end(), is_send);
  return n;
}

void expect_consistent_timeline(const Simulation& sim, const ScheduleShape& s,
                                const StepCosts& costs) {
  int latest = 0;
  for (int r = 0; r < s.pp; ++r) {
    const RankTimeline& t = sim.ranks[r];
    int clock = 0, busy = 0;
    for (const TimedAction& a : t.actions) {
      EXPECT_GE(a.start, clock) << describe(s) << " rank " << r << " " << to_string(a.action);
      EXPECT_GE(a.end, a.start);
      if (is_compute(a.action)) {
        EXPECT_EQ(a.end - a.start, a.action.op == Action::forward ? costs.forward : costs.backward);
        busy += a.end - a.start;
      }
      clock = a.end;
    }
    EXPECT_EQ(t.busy, busy);
    EXPECT_EQ(t.busy, s.m * s.v * (costs.forward + costs.backward));
    EXPECT_EQ(t.idle, sim.makespan - t.busy);
    latest = std::max(latest, clock);
  }
  EXPECT_EQ(sim.makespan, latest) << describe(s);
}

TEST(PipelineDryRun, NoValidShapeDeadlocksUnderEitherSendModel) {
  for (const ScheduleShape& s : valid_shapes()) {
    const auto lists = build_all_schedules(s);
    const int transfers = s.pp > 1 ? 2 * s.m * (num_virtual_stages(s) - 1) : 0;
    ASSERT_EQ(count_sends(lists), transfers) << describe(s);
    for (SendModel model : kModels) {
      Simulation sim;
      ASSERT_NO_THROW(sim = simulate_lists(s, lists, model)) << describe(s);
      EXPECT_EQ(sim.transfers, transfers) << describe(s) << ", " << send_model_name(model);
      expect_consistent_timeline(sim, s, StepCosts{});
    }
  }
}

// The lists are placed for the default costs; the real ones differ, which may add waiting but
// never a deadlock (each list is a projection of one global order of computes and transfers).
TEST(PipelineDryRun, ListsPlacedForOneCostRunUnderAnyOther) {
  for (const ScheduleShape& s : valid_shapes()) {
    const auto lists = build_all_schedules(s);
    for (StepCosts costs : {StepCosts{1, 1}, StepCosts{3, 1}, StepCosts{1, 5}})
      for (SendModel model : kModels) {
        Simulation sim;
        ASSERT_NO_THROW(sim = simulate_lists(s, lists, model, costs))
            << describe(s) << " F=" << costs.forward << " B=" << costs.backward;
        expect_consistent_timeline(sim, s, costs);
      }
  }
}

TEST(PipelineDryRun, RendezvousNeverFinishesBeforeEager) {
  for (const ScheduleShape& s : valid_shapes())
    EXPECT_GE(simulate(s, SendModel::rendezvous).makespan, simulate(s, SendModel::eager).makespan)
        << describe(s);
}

// Rank 0 waits for the grad of micro-batch 0 before sending its activation: a cycle.
TEST(PipelineDryRun, ReceivingBeforeThePeersSendIsADeadlock) {
  const ScheduleShape s{2, 1, 4, ScheduleKind::one_f_one_b};
  auto lists = build_all_schedules(s);
  auto& r0 = lists[0];
  const auto send = std::find(r0.begin(), r0.end(), Action{Action::send_activation, 0, 0, 1});
  const auto recv = std::find(r0.begin(), r0.end(), Action{Action::recv_grad, 0, 0, 1});
  ASSERT_TRUE(send != r0.end() && recv != r0.end());
  std::iter_swap(send, recv);
  for (SendModel model : kModels)
    EXPECT_ERROR_HAS(simulate_lists(s, lists, model),
                     {"1f1b pp=2 v=1 m=4", send_model_name(model), "deadlocks",
                      "rank 0 is stuck at RECV_B0c0<-1", "rank 1 is stuck at RECV_F0c0<-0"});
}

// The naive placement (receive right before the compute that needs it, send right after the one
// that made it) runs with buffered sends but deadlocks with blocking ones: rank 0 sends F1 while
// rank 1 sends the grad of B0. This is why the lists are placed in one global order.
TEST(PipelineDryRun, NaivePlacementDeadlocksOnlyWithBlockingSends) {
  const ScheduleShape s{2, 1, 2, ScheduleKind::one_f_one_b};
  const std::vector<std::vector<Action>> lists = {
      parse_actions("F0c0 SEND_F0c0->1 F1c0 SEND_F1c0->1 RECV_B0c0<-1 B0c0 RECV_B1c0<-1 B1c0"),
      parse_actions("RECV_F0c0<-0 F0c0 B0c0 SEND_B0c0->0 RECV_F1c0<-0 F1c0 B1c0 SEND_B1c0->0")};
  EXPECT_NO_THROW(simulate_lists(s, lists, SendModel::eager));
  EXPECT_ERROR_HAS(simulate_lists(s, lists, SendModel::rendezvous),
                   {"deadlocks", "rank 0 is stuck at SEND_F1c0->1", "rank 1 is at SEND_B0c0->0",
                    "rank 1 is stuck at SEND_B0c0->0", "rank 0 is at SEND_F1c0->1"});
}

TEST(PipelineDryRun, ASendNobodyReceivesIsReported) {
  const ScheduleShape s{2, 1, 1, ScheduleKind::one_f_one_b};
  auto lists = build_all_schedules(s);
  ASSERT_EQ(to_string(lists[0]), "F0c0 SEND_F0c0->1 RECV_B0c0<-1 B0c0");
  lists[0].resize(2);  // rank 0 forgets the grad and the backward
  EXPECT_ERROR_HAS(simulate_lists(s, lists, SendModel::eager),
                   {"rank 1 sends SEND_B0c0->0 but rank 0 never receives it"});
  EXPECT_ERROR_HAS(simulate_lists(s, lists, SendModel::rendezvous),
                   {"deadlocks", "rank 1 is stuck at SEND_B0c0->0", "rank 0 has finished"});
}

TEST(PipelineDryRun, MalformedActionsAreRefused) {
  const ScheduleShape s{4, 1, 2, ScheduleKind::one_f_one_b};
  auto with = [&](int rank, size_t at, Action a) {
    auto lists = build_all_schedules(s);
    lists[rank][at] = a;
    return lists;
  };
  EXPECT_ERROR_HAS(
      simulate_lists(s, with(0, 1, {Action::send_activation, 0, 0, 2}), SendModel::eager),
      {"rank 0 action 1 (SEND_F0c0->2)", "stage 1 lives on rank 1, not on rank 2"});
  EXPECT_ERROR_HAS(
      simulate_lists(s, with(0, 0, {Action::recv_activation, 0, 0, 3}), SendModel::eager),
      {"RECV_F0c0<-3", "stage 0 has no neighbour"});
  EXPECT_ERROR_HAS(simulate_lists(s, with(0, 0, {Action::forward, 5, 0, -1}), SendModel::eager),
                   {"F5c0", "out of range"});
  auto twice = build_all_schedules(s);
  twice[3].insert(twice[3].begin() + 2, Action{Action::forward, 0, 0, -1});
  EXPECT_ERROR_HAS(simulate_lists(s, twice, SendModel::eager), {"rank 3 runs F0c0 twice"});
  EXPECT_ERROR_HAS(simulate_lists(s, {{}, {}}, SendModel::eager), {"2 action lists", "pipeline=4"});
}

// With F = B = 1 the 1F1B and GPipe step takes 2 (m + p - 1) and every rank idles 2 (p - 1):
// exactly (p-1)/(m+p-1) of the wall time. Compared as integers; the double equality below is
// exact too, both sides being correctly rounded quotients of the same rational.
TEST(PipelineDryRun, OneFOneBAndGpipeBubbleIsExactlyTheTheory) {
  const StepCosts unit{1, 1};
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::gpipe})
    for (int p : {1, 2, 4, 8})
      for (int m = 1; m <= 16; ++m) {
        const ScheduleShape s{p, 1, m, kind};
        for (SendModel model : kModels) {
          const Simulation sim = simulate(s, model, unit);
          EXPECT_EQ(sim.makespan, 2 * (m + p - 1)) << describe(s) << ", " << send_model_name(model);
          for (int r = 0; r < p; ++r) {
            EXPECT_EQ(sim.ranks[r].idle * (m + p - 1), sim.makespan * (p - 1))
                << describe(s) << " rank " << r;
            EXPECT_EQ(measured_bubble(sim, r).of_wall, theoretical_bubble(s).of_wall);
            EXPECT_EQ(measured_bubble(sim, r).of_compute, theoretical_bubble(s).of_compute);
          }
        }
      }
}

// Megatron's interleaved schedule under the default costs (B = 2 F) with eager sends: every
// rank idles (p - 1) (F + B) per chunk, (p-1)/(v m) of its compute, below 1F1B's (p-1)/m.
TEST(PipelineDryRun, InterleavedBubbleIsTheTheoryAndSmallerThanOneFOneB) {
  int compared = 0;
  for (const ScheduleShape& s : valid_shapes()) {
    if (s.kind != ScheduleKind::interleaved || s.pp == 1) continue;
    const Simulation inter = simulate(s, SendModel::eager);
    const Simulation plain = simulate({s.pp, 1, s.m, ScheduleKind::one_f_one_b}, SendModel::eager);
    for (int r = 0; r < s.pp; ++r) {
      EXPECT_EQ(inter.ranks[r].idle, (s.pp - 1) * 3) << describe(s) << " rank " << r;
      EXPECT_EQ(measured_bubble(inter, r).of_wall, theoretical_bubble(s).of_wall) << describe(s);
      EXPECT_LT(measured_bubble(inter, r).of_wall, measured_bubble(plain, r).of_wall)
          << describe(s) << " rank " << r;
    }
    ++compared;
  }
  EXPECT_GT(compared, 50);
}

TEST(PipelineDryRun, TheoryFollowsThePapersFormulas) {
  const Bubble b = theoretical_bubble({4, 2, 8, ScheduleKind::interleaved});
  EXPECT_DOUBLE_EQ(b.of_compute, 3.0 / 16);
  EXPECT_DOUBLE_EQ(b.of_wall, 3.0 / 19);
  EXPECT_DOUBLE_EQ(theoretical_bubble({4, 1, 8, ScheduleKind::one_f_one_b}).of_compute, 3.0 / 8);
  EXPECT_EQ(theoretical_bubble({1, 1, 8, ScheduleKind::one_f_one_b}).of_wall, 0.0);
}

// PP4 m8 under 1F1B and under interleaving (v = 2), the same model: a 1F1B stage holds both
// chunks, so its forward and backward cost twice a chunk's. Written to the build tree for
// tools/plot_pipeline_schedule.py (docs/parallelism.md's timeline figure).
TEST(PipelineDryRun, TimelineJsonForTheDocsFigure) {
  const std::filesystem::path dir =
      std::filesystem::path(ORIGAMI_BINARY_DIR) / "pipeline_timelines";
  std::filesystem::create_directories(dir);
  struct Case {
    ScheduleShape shape;
    StepCosts costs;
    std::string file, makespan;
  };
  for (const Case& c :
       {Case{{4, 1, 8, ScheduleKind::one_f_one_b}, {2, 4}, "pp4_m8_1f1b.json", "\"makespan\": 66"},
        Case{{4, 2, 8, ScheduleKind::interleaved},
             {1, 2},
             "pp4_v2_m8_interleaved.json",
             "\"makespan\": 57"}}) {
    const Simulation sim = simulate(c.shape, SendModel::eager, c.costs);
    const std::string json = timeline_json(c.shape, sim, SendModel::eager, c.costs);
    EXPECT_NE(json.find(c.makespan), std::string::npos) << json.substr(0, 300);
    EXPECT_NE(json.find("\"name\": \"SEND_F0c0->1\""), std::string::npos);
    EXPECT_EQ(std::count(json.begin(), json.end(), '{'), std::count(json.begin(), json.end(), '}'));
    std::ofstream(dir / c.file) << json;
  }
}

}  // namespace
}  // namespace origami
