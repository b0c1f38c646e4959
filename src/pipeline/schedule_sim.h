// defines: SendModel, TimedAction, RankTimeline, Simulation, simulate(), simulate_lists(),
//          Bubble, theoretical_bubble(), measured_bubble(), timeline_json()
// A dry run of all ranks' action lists together, as torch.distributed.pipelining's
// _simulate_comms_compute: each rank advances while its next action can complete, and a state
// where none can is a deadlock, reported as an Error naming every stuck rank and action. The
// timeline it keeps (unit costs per compute) gives the measured bubble beside the theory.
#pragma once
#include <string>
#include <vector>

#include "pipeline/schedule.h"

namespace origami {

// rendezvous: a send completes only together with the matching receive (MPI_Send of a large
// message); eager: a send completes at once into a buffer and the receive takes it later.
// Read bubbles under eager sends (an executor that posts sends without waiting on them);
// rendezvous proves blocking sends cannot deadlock, and its timeline adds the waits of a sender
// meeting a busy receiver (large at PP = 2 interleaved, where both directions share one peer).
enum class SendModel { rendezvous, eager };
const char* send_model_name(SendModel model);

struct TimedAction {
  int start;  // compute: when it began; receive/send: when the rank reached it
  int end;    // when it completed (a transfer takes no time; a wait shows as end > start)
  Action action;
};

struct RankTimeline {
  std::vector<TimedAction> actions;  // in list order
  int busy = 0;                      // compute time
  int idle = 0;                      // makespan - busy: the rank's share of the bubble
};

struct Simulation {
  std::vector<RankTimeline> ranks;
  int makespan = 0;   // the step's wall time: when the last rank finishes
  int transfers = 0;  // sends that met exactly one receive
};

// Builds every rank's list (build_all_schedules, placed under `costs`) and runs them together.
Simulation simulate(const ScheduleShape& shape, SendModel model, const StepCosts& costs = {});

// Runs the given lists (one per pipeline rank). Throws an Error on a deadlock, on a malformed
// action (peer not the neighbouring stage's rank, a transfer the last or first stage cannot
// make), on a compute run twice or never, and on a send no receive takes.
Simulation simulate_lists(const ScheduleShape& shape, const std::vector<std::vector<Action>>& lists,
                          SendModel model, const StepCosts& costs = {});

// Bubble as idle / compute (the papers' form: (p-1)/(v m)) and as idle / wall time
// ((p-1)/(v m + p - 1)).
struct Bubble {
  double of_compute;
  double of_wall;
};
Bubble theoretical_bubble(const ScheduleShape& shape);
Bubble measured_bubble(const Simulation& sim, int rank);

// The run as one JSON object (shape, costs, send model, makespan, theoretical and per-rank
// measured bubble, every rank's timed actions) for tools/plot_pipeline_schedule.py.
std::string timeline_json(const ScheduleShape& shape, const Simulation& sim, SendModel model,
                          const StepCosts& costs);

}  // namespace origami
