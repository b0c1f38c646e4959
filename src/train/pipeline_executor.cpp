// PipelineExecutor: walks the rank's action list in order; compute actions call the stage's
// work, transfers are blocking sends / receives on the PP group (the list is deadlock-free under
// blocking sends, schedule_sim.h proves it for every shape).
#include "train/pipeline_executor.h"

#include <algorithm>
#include <chrono>

#include "base/error.h"

namespace origami {

namespace {

// The smallest MPI_TAG_UB the standard allows.
constexpr int kMaxTag = 32767;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PipelineExecutor::PipelineExecutor(Backend& be, const Communicator& pp, const ScheduleShape& shape,
                                   int64_t elements, const StepCosts& costs)
    : be_(be), pp_(pp), shape_(shape), elements_(elements) {
  check_schedule_shape(shape);
  check(pp.size() == shape.pp, "pipeline executor: the pipeline group '{}' has {} ranks, the "
        "schedule {} (parallel.pipeline)", pp.name(), pp.size(), shape.pp);
  check(elements > 0, "pipeline executor: boundary of {} elements; allowed: > 0", elements);
  const int64_t tags = 2 * int64_t(shape.m) * num_virtual_stages(shape);
  check(tags <= kMaxTag, "pipeline executor: {} micro-batches x {} virtual stages need {} message "
        "tags, more than MPI guarantees ({}); use fewer micro-batches per step or stages",
        shape.m, num_virtual_stages(shape), tags, kMaxTag);
  actions_ = build_schedule(shape, pp.rank(), costs);
  backward_next_.assign(actions_.size(), false);
  for (size_t i = 0; i < actions_.size(); ++i) {
    if (actions_[i].op != Action::forward) continue;
    size_t j = i + 1;
    while (j < actions_.size() && !is_compute(actions_[j])) ++j;
    backward_next_[i] = j < actions_.size() && actions_[j].op == Action::backward &&
                        actions_[j].micro_batch == actions_[i].micro_batch &&
                        actions_[j].chunk == actions_[i].chunk;
  }
  ScheduleShape gpipe = shape;
  gpipe.kind = ScheduleKind::gpipe;
  for (const Action& a : build_schedule(gpipe, pp.rank(), costs))
    if (a.op == Action::forward || a.op == Action::send_activation ||
        a.op == Action::recv_activation)
      forward_actions_.push_back(a);
}

int PipelineExecutor::peak_buffers(const ScheduleShape& shape, int rank, const StepCosts& costs) {
  const int last = num_virtual_stages(shape) - 1;
  int held = 0, peak = 0;
  for (const Action& a : build_schedule(shape, rank, costs)) {
    const int s = virtual_stage(shape, rank, a.chunk);
    switch (a.op) {
      case Action::recv_activation:
      case Action::recv_grad:
        ++held;
        break;
      case Action::forward:
        held += s != last;  // its output, until sent
        break;
      case Action::backward:  // the input gradient is taken before input and output grad return
        held += s != 0;
        peak = std::max(peak, held);
        held -= (s != 0) + (s != last);
        break;
      case Action::send_activation:
      case Action::send_grad:
        --held;
        break;
    }
    peak = std::max(peak, held);
  }
  return peak;
}

int PipelineExecutor::tag(int micro_batch, int boundary, bool grad) const {
  return 2 * (micro_batch * num_virtual_stages(shape_) + boundary) + (grad ? 1 : 0);
}

Tensor PipelineExecutor::acquire() {
  if (pool_.empty()) {
    ++allocated_;
    return Tensor::zeros(be_, {elements_});
  }
  Tensor t = std::move(pool_.back());
  pool_.pop_back();
  return t;
}

void PipelineExecutor::release(Tensor t) { pool_.push_back(std::move(t)); }

Tensor PipelineExecutor::take(std::map<Key, Tensor>& from, Key k, const char* what) {
  auto it = from.find(k);
  check(it != from.end(), "pipeline executor: rank {} has no {} of micro-batch {} chunk {} (the "
        "schedule list is inconsistent)", pp_.rank(), what, k.first, k.second);
  Tensor t = std::move(it->second);
  from.erase(it);
  return t;
}

PipelineStepTimes PipelineExecutor::run(const StageWork& work) {
  return execute(actions_, backward_next_, work, false);
}

PipelineStepTimes PipelineExecutor::run_forward(const StageWork& work) {
  return execute(forward_actions_, std::vector<bool>(forward_actions_.size(), false), work, true);
}

PipelineStepTimes PipelineExecutor::execute(const std::vector<Action>& actions,
                                            const std::vector<bool>& keep, const StageWork& work,
                                            bool forward_only) {
  PipelineStepTimes times;
  const int last = num_virtual_stages(shape_) - 1, rank = pp_.rank();
  for (size_t ai = 0; ai < actions.size(); ++ai) {
    const Action& a = actions[ai];
    const Key k{a.micro_batch, a.chunk};
    const int s = virtual_stage(shape_, rank, a.chunk);
    const auto t0 = std::chrono::steady_clock::now();
    switch (a.op) {
      case Action::recv_activation: {  // from stage s-1, across boundary s-1
        Tensor t = acquire();
        pp_.recv(t.data(), elements_, CommDType::f32, a.peer, tag(a.micro_batch, s - 1, false));
        inputs_[k] = std::move(t);
        times.comm_s += seconds_since(t0);
        break;
      }
      case Action::forward: {
        const float* in = s == 0 ? nullptr : inputs_.at(k).data();
        float* out = nullptr;
        if (s != last) out = (outputs_[k] = acquire()).data();
        work.forward(a.micro_batch, a.chunk, in, out, keep[ai]);
        if (forward_only && s != 0) release(take(inputs_, k, "input"));
        times.compute_s += seconds_since(t0);
        break;
      }
      case Action::send_activation: {  // to stage s+1, across boundary s
        Tensor t = take(outputs_, k, "activation to send");
        pp_.send(t.data(), elements_, CommDType::f32, a.peer, tag(a.micro_batch, s, false));
        release(std::move(t));
        times.comm_s += seconds_since(t0);
        break;
      }
      case Action::recv_grad: {  // from stage s+1, across boundary s
        Tensor t = acquire();
        pp_.recv(t.data(), elements_, CommDType::f32, a.peer, tag(a.micro_batch, s, true));
        output_grads_[k] = std::move(t);
        times.comm_s += seconds_since(t0);
        break;
      }
      case Action::backward: {
        Tensor in, og;
        if (s != 0) in = take(inputs_, k, "input");
        if (s != last) og = take(output_grads_, k, "output gradient");
        float* ig = nullptr;
        if (s != 0) ig = (input_grads_[k] = acquire()).data();
        work.backward(a.micro_batch, a.chunk, s == 0 ? nullptr : in.data(),
                      s == last ? nullptr : og.data(), ig);
        if (s != 0) release(std::move(in));
        if (s != last) release(std::move(og));
        times.compute_s += seconds_since(t0);
        break;
      }
      case Action::send_grad: {  // to stage s-1, across boundary s-1
        Tensor t = take(input_grads_, k, "input gradient to send");
        pp_.send(t.data(), elements_, CommDType::f32, a.peer, tag(a.micro_batch, s - 1, true));
        release(std::move(t));
        times.comm_s += seconds_since(t0);
        break;
      }
    }
  }
  check(inputs_.empty() && outputs_.empty() && output_grads_.empty() && input_grads_.empty(),
        "pipeline executor: rank {} ended the step with buffers still in flight (the schedule "
        "list is inconsistent)", rank);
  return times;
}

}  // namespace origami
