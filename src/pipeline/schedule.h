// defines: ScheduleKind, ScheduleShape, Action, StepCosts, build_schedule(), compute_order(),
//          max_in_flight(), to_string() / parse_actions(), virtual stage helpers
// The pipeline schedule as data (DESIGN.md, "Pipeline parallelism, concretely"): a pure function
// of (PP, v, m, kind, rank) gives the ordered actions one rank runs in a step, forward/backward of
// (micro-batch, chunk) and the sends/receives between stages. Virtual stage s = chunk*PP + rank
// (Megatron). An executor runs any list; schedule_sim.h dry-runs all ranks' lists together.
#pragma once
#include <string>
#include <vector>

namespace origami {

// parallel.pipeline_schedule: gpipe (all forwards, then all backwards; the simple reference),
// 1f1b (Megatron's non-interleaved schedule, v = 1), interleaved (Megatron's virtual pipeline).
enum class ScheduleKind { gpipe, one_f_one_b, interleaved };
ScheduleKind parse_schedule_kind(const std::string& name);
const char* schedule_kind_name(ScheduleKind kind);  // the config spelling

struct ScheduleShape {
  int pp = 1;  // pipeline ranks (parallel.pipeline)
  int v = 1;   // chunks per rank (parallel.virtual_pipeline)
  int m = 1;   // micro-batches per step
  ScheduleKind kind = ScheduleKind::one_f_one_b;
  int group = 0;  // interleaved only: micro-batches per chunk in a row (Megatron's g); 0 = pp
};

// Throws an Error naming the config keys when the schedule cannot run this shape; the only
// place the micro-batch rules live (interleaved: pp <= g <= m, m % g == 0 or m % g >= pp).
void check_schedule_shape(const ScheduleShape& shape);
int group_size(const ScheduleShape& shape);  // g with the default applied

inline int num_virtual_stages(const ScheduleShape& s) { return s.pp * s.v; }
inline int virtual_stage(const ScheduleShape& s, int rank, int chunk) {
  return chunk * s.pp + rank;
}
inline int stage_rank(const ScheduleShape& s, int stage) { return stage % s.pp; }
inline int stage_chunk(const ScheduleShape& s, int stage) { return stage / s.pp; }

struct Action {
  enum Op { forward, backward, send_activation, recv_activation, send_grad, recv_grad };
  Op op;
  int micro_batch;
  int chunk;  // on this rank: the chunk that computes, whose output / input grad a send carries,
              // or that consumes what a receive brings
  int peer;   // pipeline rank sent to / received from; -1 for compute
  bool operator==(const Action&) const = default;
};
bool is_compute(const Action& a);
bool is_send(const Action& a);
// "F3c1", "B3c1", "SEND_F3c1->2", "RECV_F3c1<-0", "SEND_B3c1->0", "RECV_B3c1<-2"
std::string to_string(const Action& a);
std::string to_string(const std::vector<Action>& actions);  // space-separated
// The inverse of to_string: space-separated actions in that form (hand-written lists in tests).
std::vector<Action> parse_actions(const std::string& text);

// Unit times of one chunk's forward and backward. The lists place each send and receive where
// it falls in time under these costs (schedule_comm.cpp), so they only shape waiting, never
// correctness: the lists never deadlock whatever the real costs are.
struct StepCosts {
  int forward = 1;
  int backward = 2;
};

// The compute actions (F and B only) rank `rank` runs, in order.
std::vector<Action> compute_order(const ScheduleShape& shape, int rank);

// Everything rank `rank` runs in one step, sends and receives included, ordered so that all
// ranks' lists together cannot deadlock with blocking (rendezvous) or buffered sends. With
// PP = 1 no communication appears: v = 1 gives F0 B0 F1 B1 ... under 1f1b.
std::vector<Action> build_schedule(const ScheduleShape& shape, int rank,
                                   const StepCosts& costs = {});
std::vector<std::vector<Action>> build_all_schedules(const ScheduleShape& shape,
                                                     const StepCosts& costs = {});

// The most forwards not yet matched by their backward at any point of the list: how many
// micro-batch activations (of one chunk each) the rank holds at its peak.
int max_in_flight(const std::vector<Action>& actions);

}  // namespace origami
