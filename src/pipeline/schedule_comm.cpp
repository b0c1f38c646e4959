// Where the sends and receives go in each rank's list. All ranks' compute orders are timed
// together under StepCosts; every transfer becomes one event at the moment its producer finishes
// (before any compute starting then), and each rank's list is its share of that one global order.
// A rank's list is thus a projection of one total order in which a send and its receive are the
// same event, so neither blocking (rendezvous) nor buffered sends can deadlock, whatever the costs.
#include <fmt/format.h>

#include <algorithm>
#include <tuple>

#include "base/error.h"
#include "pipeline/schedule.h"

namespace origami {
namespace {

// One entry of the global order: a compute on `rank`, or a transfer from `rank` to `peer`.
struct Event {
  int time;
  int is_compute;  // transfers at a moment come before the computes that start then
  int rank;
  Action action;  // a compute, or the producer's compute whose output (or input grad) travels
  int peer = -1;  // transfers only

  auto key() const {
    return std::make_tuple(time, is_compute, rank, static_cast<int>(action.op), action.micro_batch,
                           action.chunk);
  }
};

}  // namespace

std::vector<std::vector<Action>> build_all_schedules(const ScheduleShape& shape,
                                                     const StepCosts& costs) {
  check_schedule_shape(shape);
  check(costs.forward >= 1 && costs.backward >= 1,
        "pipeline step costs must be at least one time unit (forward {}, backward {})",
        costs.forward, costs.backward);
  const int stages = num_virtual_stages(shape);
  std::vector<std::vector<Action>> orders;
  for (int r = 0; r < shape.pp; ++r) orders.push_back(compute_order(shape, r));

  // finish time of F / B of (micro-batch, virtual stage); -1 while not yet placed
  std::vector<std::vector<int>> fwd_end(stages, std::vector<int>(shape.m, -1));
  std::vector<std::vector<int>> bwd_end(stages, std::vector<int>(shape.m, -1));
  std::vector<size_t> next(shape.pp, 0);
  std::vector<int> free_at(shape.pp, 0);
  std::vector<Event> events;

  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < shape.pp; ++r) {
      for (; next[r] < orders[r].size(); ++next[r]) {
        const Action a = orders[r][next[r]];
        const int s = virtual_stage(shape, r, a.chunk);
        const bool fwd = a.op == Action::forward;
        int ready = 0;
        if (fwd && s > 0) ready = fwd_end[s - 1][a.micro_batch];
        if (!fwd) {
          ready = fwd_end[s][a.micro_batch];
          if (ready >= 0 && s < stages - 1) ready = bwd_end[s + 1][a.micro_batch];
        }
        if (ready < 0) break;  // its input is produced later; other ranks move first
        const int start = std::max(free_at[r], ready);
        free_at[r] = start + (fwd ? costs.forward : costs.backward);
        (fwd ? fwd_end : bwd_end)[s][a.micro_batch] = free_at[r];
        events.push_back({start, 1, r, a});
        const int to = fwd ? s + 1 : s - 1;
        if (to >= 0 && to < stages && stage_rank(shape, to) != r)
          events.push_back({free_at[r], 0, r, a, stage_rank(shape, to)});
        progress = true;
      }
    }
  }
  for (int r = 0; r < shape.pp; ++r)
    check(next[r] == orders[r].size(),
          "internal: the {} compute order of pp={} v={} m={} stalls on rank {} at {}",
          schedule_kind_name(shape.kind), shape.pp, shape.v, shape.m, r,
          to_string(orders[r][next[r]]));

  std::sort(events.begin(), events.end(),
            [](const Event& x, const Event& y) { return x.key() < y.key(); });
  std::vector<std::vector<Action>> lists(shape.pp);
  for (const Event& e : events) {
    if (e.is_compute) {
      lists[e.rank].push_back(e.action);
      continue;
    }
    const bool fwd = e.action.op == Action::forward;
    const int to_stage = virtual_stage(shape, e.rank, e.action.chunk) + (fwd ? 1 : -1);
    const int mb = e.action.micro_batch;
    lists[e.rank].push_back(
        {fwd ? Action::send_activation : Action::send_grad, mb, e.action.chunk, e.peer});
    lists[e.peer].push_back({fwd ? Action::recv_activation : Action::recv_grad, mb,
                             stage_chunk(shape, to_stage), e.rank});
  }
  return lists;
}

std::vector<Action> build_schedule(const ScheduleShape& shape, int rank, const StepCosts& costs) {
  check(rank >= 0 && rank < shape.pp, "pipeline rank {} is outside parallel.pipeline={}", rank,
        shape.pp);
  return build_all_schedules(shape, costs)[rank];
}

}  // namespace origami
