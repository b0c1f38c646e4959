// defines: StageWork, PipelineExecutor, PipelineStepTimes
// Runs one rank's schedule list (build_schedule) for one optimizer step: each F / B calls the
// stage's work for (micro-batch, chunk), each send / receive moves one micro-batch's activation or
// gradient to or from the neighbouring pipeline rank over the PP group. The executor owns the
// boundary buffers (one per in-flight transfer, from a pool sized by the list's peak) and knows
// nothing of the model: a 1-stage run is the same loop over the degenerate list F0 B0 F1 B1 ...
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "pipeline/schedule.h"
#include "tensor/tensor.h"

namespace origami {

// What a stage computes. Buffers are `elements` floats of backend memory (the boundary shape,
// e.g. [seq/CP(/TP), mbs, H]); null where virtual stage 0 has no input or the last virtual stage
// no output (it computes the loss) and, in backward, no output gradient (its loss seeds it) or no
// input gradient to return.
// backward_next: the rank's next compute action is this forward's backward (1F1B's last stage,
// every step of a 1-stage run), so the stage may keep its activations for it instead of
// replaying the forward there.
struct StageWork {
  std::function<void(int micro_batch, int chunk, const float* input, float* output,
                     bool backward_next)>
      forward;
  // input: what forward received (kept until this backward, so a stage may recompute from it).
  std::function<void(int micro_batch, int chunk, const float* input, const float* output_grad,
                     float* input_grad)>
      backward;
};

// Wall time of one run, split into the stage's own work and the time spent in sends and
// receives (waiting for a neighbour, or moving the data): the measured pipeline bubble.
struct PipelineStepTimes {
  double compute_s = 0.0;
  double comm_s = 0.0;
  // Idle (sends and receives) over compute: the papers' bubble, (p-1)/(v m) in theory.
  double bubble() const { return compute_s > 0 ? comm_s / compute_s : 0.0; }
  // The same as a share of the step's wall time.
  double idle_fraction() const {
    return compute_s + comm_s > 0 ? comm_s / (compute_s + comm_s) : 0.0;
  }
};

class PipelineExecutor {
 public:
  // pp: the pipeline group (rank i = pipeline stage i, ProcessGroups::pp); it, be and the
  // shape's rules are checked here (check_schedule_shape). Tags are (micro-batch, stage
  // boundary, kind), so activations and gradients never match each other, even at PP = 2 where
  // the previous and the next rank are the same.
  PipelineExecutor(Backend& be, const Communicator& pp, const ScheduleShape& shape,
                   int64_t elements, const StepCosts& costs = {});

  PipelineStepTimes run(const StageWork& work);
  // Forwards only (evaluation, reports): the forward half of a GPipe list, each input released
  // after its forward; work.backward is not called.
  PipelineStepTimes run_forward(const StageWork& work);

  const std::vector<Action>& actions() const { return actions_; }
  const ScheduleShape& shape() const { return shape_; }
  // Boundary buffers allocated so far: the most that were in use at once.
  size_t buffers_allocated() const { return allocated_; }
  // The most boundary buffers rank `rank`'s list holds at once (what run() allocates): received
  // inputs and output gradients until their backward, outputs and input gradients until sent.
  static int peak_buffers(const ScheduleShape& shape, int rank, const StepCosts& costs = {});

 private:
  using Key = std::pair<int, int>;  // (micro-batch, chunk)
  int tag(int micro_batch, int boundary, bool grad) const;
  Tensor acquire();
  void release(Tensor t);
  Tensor take(std::map<Key, Tensor>& from, Key k, const char* what);
  PipelineStepTimes execute(const std::vector<Action>& actions, const std::vector<bool>& keep,
                            const StageWork& work, bool forward_only);

  Backend& be_;
  const Communicator& pp_;
  ScheduleShape shape_;
  int64_t elements_;
  std::vector<Action> actions_, forward_actions_;
  std::vector<bool> backward_next_;  // per action of actions_: a forward followed by its backward
  std::vector<Tensor> pool_;
  size_t allocated_ = 0;
  // In flight: received inputs (until backward), outputs (until sent), received output
  // gradients (until backward), input gradients (until sent).
  std::map<Key, Tensor> inputs_, outputs_, output_grads_, input_grads_;
};

}  // namespace origami
