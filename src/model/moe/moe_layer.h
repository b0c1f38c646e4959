// defines: MoeLayer, RouterLossScales, MoeLayerStats
// The MoE block as Megatron-Core's named stages: route -> (capacity) -> dispatch -> experts ->
// combine, plus an optional always-on shared expert. Auxiliary losses (load balance, z-loss) are
// evaluated in forward and their gradients injected in backward with the scale the trainer
// passes, so loss normalisation over micro-batches and ranks is decided in one place.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/mlp.h"
#include "model/moe/balance_loss.h"
#include "model/moe/experts.h"
#include "model/moe/fssdp_experts.h"
#include "model/moe/residual_moe.h"
#include "model/moe/router.h"
#include "model/moe/token_dispatcher.h"
#include "model/moe/zero_compute_experts.h"

namespace origami {

// Gradient scale of each per-layer auxiliary loss value (coefficient x normalisation).
struct RouterLossScales {
  float balance = 0.f;
  float z = 0.f;
};

// Host-side statistics of the last forward. The router-loss values stay on the backend (see
// set_loss_accumulators): reading them every micro-batch would cost a device sync per layer.
struct MoeLayerStats {
  // This rank's routed (token, slot)s per router row: the FFN experts, then MoE++'s and
  // AdaMoE's (ExpertKinds).
  std::vector<int64_t> expert_counts;
  int64_t dropped_slots = 0;           // capacity mode: slots over capacity on this rank
};

// What the layer moved and computed since the last take_exchange_stats() (first passes).
struct MoeExchangeStats {
  int64_t dispatch_bytes = 0;  // all-to-all bytes this rank sent to others (both directions)
  int64_t fssdp_bytes = 0;     // spAG + spRS (+ re-sharding) bytes this rank sent
  int64_t rows_computed = 0;   // rows this rank's experts computed (the straggler measure)
  int64_t copies = 0;          // FSSDP copies this rank held this step
  MoeExchangeStats& operator+=(const MoeExchangeStats& o) {
    dispatch_bytes += o.dispatch_bytes, fssdp_bytes += o.fssdp_bytes;
    rows_computed += o.rows_computed, copies += o.copies;
    return *this;
  }
};

class MoeLayer {
 public:
  MoeLayer(ModelContext& ctx, ParamStore& store, const std::string& prefix, int num_layers);
  // x, out [local_tokens, H]. pass (model_context.h): recompute_activations keeps the first
  // pass's statistics and loss gradients; replay recomputes the loss gradients (the global-batch
  // balance from the statistics as they were after this micro-batch) without counting anything.
  void forward(const float* x, float* out, const RouterLossScales& scales,
               ForwardPass pass = ForwardPass::first);
  // dx [N,H] overwritten.
  void backward(const float* dout, const float* x, float* dx);
  const MoeLayerStats& stats() const { return stats_; }
  // Where forward adds its unscaled router-loss values: losses[0] += E sum f_i P_i (balance),
  // losses[1] += mean logsumexp^2 (z-loss, only when moe.router.z_loss_coeff > 0); two doubles
  // in backend memory that the model zeroes per step and reads once.
  void set_loss_accumulators(double* losses) { losses_ = losses; }
  // Start of an optimizer step: resets the global-batch balance statistics (FSSDP: installs the
  // iteration's placement).
  void begin_step();
  // End of a training step's backward (FSSDP: copies' gradients to their owners, copies freed,
  // loads recorded; collective over the owner group). No-op without FSSDP.
  void end_step();
  FssdpExperts* fssdp() { return fssdp_.get(); }
  const FssdpExperts* fssdp() const { return fssdp_.get(); }
  MoeExchangeStats take_exchange_stats();
  // Gating schedule position of the next forward passes (gating_schedule.h).
  void set_router_clock(const RouterClock& clock) { router_.set_clock(clock); }
  Router& router() { return router_; }
  const Router& router() const { return router_; }
  // End of EvoMoE's diversify phase: every expert becomes a copy of expert 0 (collective over EP).
  void spawn_experts(const DiversifyConfig& d) { experts_.spawn_from_first(d); }

 private:
  // Capacity mode: drops slots over capacity into dispatch_experts_; returns C (0 = dropless).
  int64_t apply_capacity();
  // Router rows beyond the FFN experts: their slots become -1 in dispatch_experts_ (the
  // dispatcher's choice) and router_counts_ counts every row (what the balance loss sees).
  void split_extra_slots();
  // Sequences the balance loss sees in this rank's rows: the micro-batch's when the rank holds
  // whole sequences, else one block (sequence mode then maps rows to sequences itself).
  int64_t balance_batch() const {
    return ctx_.tp_size() * ctx_.cp_size() == 1 ? ctx_.shape.batch : 1;
  }

  ModelContext& ctx_;
  BalanceLoss balance_;
  Router router_;
  TokenDispatcher dispatcher_;
  GroupedExperts experts_;
  std::unique_ptr<FssdpExperts> fssdp_;  // moe.fssdp.enabled: the experts' owner and copies
  std::unique_ptr<SwigluMlp> shared_expert_;
  std::unique_ptr<ZeroComputeExperts> zero_compute_;  // MoE++'s copy / constant experts
  std::unique_ptr<ResidualMoe> residual_;             // moe.residual (PR-MoE)
  DispatchPlan plan_;             // this micro-batch's routing, from dispatch to backward
  // Capacity mode or extra router rows: the router's choice minus dropped / non-FFN slots.
  IndexTensor dispatch_experts_;
  std::vector<int64_t> router_counts_;  // then: the router's choice per router row
  Tensor expert_out_, dexpert_out_, dexpert_in_, dweights_, dprobs_, dlse_, drouted_;
  bool has_balance_grad_ = false, has_z_grad_ = false;
  TensorOf<double> own_losses_, replay_losses_;  // replay adds its values to the latter
  double* losses_ = nullptr;
  MoeLayerStats stats_;
  int64_t rows_computed_ = 0, copies_this_step_ = 0;
};

}  // namespace origami
