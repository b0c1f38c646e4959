// defines: Trainer
// Owns one run: layout and process groups, backend, data, model, optimizer, metrics. The
// constructor validates and allocates (every input error surfaces here, before training);
// train() runs the loop; train_step() is the whole step, readable top to bottom:
//   data -> forward/backward per micro-batch -> gradient reduction -> clip -> AdamW -> metrics.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "comm/parallel_layout.h"
#include "config/config.h"
#include "data/sample_source.h"
#include "model/moe_transformer.h"
#include "optim/optimizer.h"
#include "train/pipeline_executor.h"
#include "train/expert_report.h"
#include "train/metrics.h"
#include "train/step_profile.h"

namespace origami {

struct StepResult {
  double lm_loss = 0, balance_loss = 0, z_loss = 0, grad_norm = 0, lr = 0;
  bool skipped = false;
  double pipeline_bubble = 0;  // this rank's share of the step spent in pipeline sends / receives
  double dropped_fraction = 0;  // capacity mode: dropped (token, slot)s / all, over the batch
  std::vector<std::vector<int64_t>> expert_counts;  // [moe layer][expert], global batch
  GateState gate;  // the gating schedule's gate at this step (moe.router.schedule)
  // The MoE exchange, summed over all ranks: all-to-all bytes (dispatch and combine, both
  // directions), FSSDP's spAG + spRS (+ re-sharding) bytes, materialised copies, and the rows
  // the experts computed per rank (max and mean: their ratio is the straggler ratio).
  double dispatch_bytes = 0, fssdp_bytes = 0, fssdp_copies = 0;
  double rows_max = 0, rows_mean = 0;
  int64_t experts_moved = 0;  // FSSDP re-sharding at the end of this step
  // training.precision bf16: fp32 values this rank converted into bf16 buffers during the step
  // (Backend::converted_elements): the parameters' compute copy, once; anything more is a
  // conversion the design does not expect (docs/precision.md).
  int64_t bf16_conversions = 0;
};

class Trainer {
 public:
  Trainer(const Config& cfg, const Communicator& world);
  ~Trainer();
  // Runs training.train_steps steps (from the current step); returns the per-step LM losses.
  std::vector<double> train();
  StepResult train_step();
  // Saves a checkpoint of the current state (collective); returns its path.
  std::string save_checkpoint_now();
  double evaluate();  // mean LM loss over training.eval_steps global batches of the valid split
  // Expert-selection frequency per blend dataset and MoE layer (logging.expert_report_interval).
  ExpertReport expert_report();

  MoeTransformer& model() { return *model_; }
  Backend& backend() { return *backend_; }
  Optimizer& optimizer() { return *optimizer_; }
  const ParallelLayout& layout() const { return layout_; }
  int64_t step() const { return step_; }

 private:
  void load_micro_batches(const SampleSource& source, int64_t first_sample);
  void forward_only(const std::function<void(const ForwardStats&)>& take);

  Config cfg_;
  const Communicator& world_;
  ParallelLayout layout_;
  std::unique_ptr<Backend> backend_;
  // The world as the model and optimizer see it: staged through host memory for a device
  // backend (null for cpu, where world_ is used directly).
  std::unique_ptr<Communicator> device_world_;
  // logging.profile: the world the groups split from, timing every collective (else null).
  std::shared_ptr<CommTimes> comm_times_ = std::make_shared<CommTimes>();
  std::unique_ptr<Communicator> timed_world_;
  ProcessGroups groups_;
  std::unique_ptr<SampleSource> train_data_, valid_data_;
  std::vector<std::unique_ptr<SampleSource>> report_data_;  // one per blend entry
  std::unique_ptr<MoeTransformer> model_;
  std::unique_ptr<Optimizer> optimizer_;  // AdamW, or ZeRO-1 (optimizer.distributed)
  std::unique_ptr<PipelineExecutor> pipeline_;
  std::unique_ptr<MetricsSink> metrics_;
  std::unique_ptr<StepProfile> profile_;  // logging.profile
  std::string run_dir_;  // rank 0 only
  int32_t eod_id_ = -1;
  int64_t step_ = 0, consumed_samples_ = 0, skipped_ = 0;
  int64_t micro_batches_ = 0;  // per rank per step
  // Host staging of this rank's micro-batches: [micro][mbs * seq]
  std::vector<std::vector<int32_t>> tokens_, targets_;
};

}  // namespace origami
