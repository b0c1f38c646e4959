// defines: AdamW
// Adam with decoupled weight decay over a ParamStore: fp32 moments (one flat buffer each, laid
// out like the parameters), weight decay only where the parameter's spec asks for it (not on
// norms), bias correction by the optimizer step count. The gradient norm and clipping are
// computed over all parameters before the update (global_grad_norm / clip_gradients).
#pragma once
#include <cstdint>

#include "comm/communicator.h"
#include "config/config.h"
#include "model/parameters.h"

namespace origami {

class AdamW {
 public:
  AdamW(Backend& backend, const ParamStore& store, const OptimizerConfig& cfg);
  // One update with learning rate lr; increments the step count first (t >= 1).
  void step(ParamStore& store, double lr);
  int64_t steps() const { return t_; }
  // Checkpoints: moments laid out like the store's value buffer, and the step count.
  void load_state(const std::vector<float>& m, const std::vector<float>& v, int64_t steps);
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }

 private:
  Backend& be_;
  OptimizerConfig cfg_;
  Tensor m_, v_;
  int64_t t_ = 0;
};

// sqrt(sum of squared gradients) of the whole model. Dense gradients are replicated on every rank
// of a stage (after reduction); expert gradients are split over the ranks holding different
// experts or expert slices (`expert_shards`, the ETP x EP group), whose squares are summed.
double global_grad_norm(Backend& be, const ParamStore& store, const Communicator& expert_shards);
// The global-norm clipping factor: clip / norm when norm > clip (clip > 0), else 1.
double clip_factor(double norm, double clip);
// Scales all gradients by clip_factor(norm, clip). Returns the factor applied.
double clip_gradients(Backend& be, ParamStore& store, double norm, double clip);

}  // namespace origami
