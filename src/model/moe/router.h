// defines: Router (linear gate, scores, expert selection, gate weights, expert bias)
// Logits = x W_r^T in fp32 always. With the default options (softmax over all experts, top-k,
// optional renormalisation) the backend's fused router op does the rest; every other option
// (sigmoid scores, top-k of the logits, scaling, group-limited top-k, the aux-loss-free expert
// bias, a k below the slot count, the dense-to-sparse gate) goes through router_gate_forward.
// Outputs: the balance-loss scores, each token's experts in `slots` columns (-1 = unused), their
// combine weights and the logits' log-sum-exp (z-loss). The gate is set per forward by a
// RouterClock (gating_schedule.h). Backward takes the gradients of weights, scores and lse.
//
// Cross-layer routers pass a state from each MoE layer to the next (state_width() columns):
//   gating_residual (MoE++): logits_l = W x + W_map z_{l-1}; the state is the logits z_l
//   recurrent (RMoE):        u = W_in x, g_l = GRU(u, g_{l-1}), logits_l = W g_l; the state g_l
// The previous layer's state and its gradient buffer come from set_previous() (the model's
// first MoE layer has none: no W_map, g_0 = 0); backward adds into that gradient, and the
// layer's own state_grad() is what the next layer added, consumed (and cleared) by backward.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/model_context.h"
#include "model/moe/expert_kinds.h"
#include "model/moe/gating_schedule.h"
#include "model/moe/router_gru.h"
#include "model/parameters.h"

namespace origami {

class Router {
 public:
  Router(ModelContext& ctx, ParamStore& store, const std::string& prefix);
  // The gate of the following forward passes (step, noise position); default: step 0, no noise.
  void set_clock(const RouterClock& clock);
  void forward(const float* x);
  // dprobs / dlse may be null. dx is accumulated into. Nothing to do while !trains().
  void backward(const float* dweights, const float* dprobs, const float* dlse, const float* x,
                float* dx);

  // E here is the router's rows (ExpertKinds::routed(): FFN experts, then MoE++'s and AdaMoE's).
  const float* probs() const { return probs_.data(); }     // [N, E] balance-loss scores
  const int32_t* experts() const { return idx_.data(); }   // [N, slots]
  const float* weights() const { return weights_.data(); } // [N, slots]
  const float* lse() const { return lse_.data(); }         // [N]
  int64_t slots() const { return slots_; }
  int64_t rows() const { return E_; }
  const ExpertKinds& kinds() const { return kinds_; }
  const GateState& gate() const { return gate_; }
  const RouterClock& clock() const { return clock_; }
  // False in the diversify phase: routing is fixed (expert 0, weight 1), the router unused.
  bool trains() const { return gate_.kind != GateKind::single_expert; }

  // Columns of the state a MoE layer passes to the next (0: none; see above).
  static int64_t state_width(const MoeConfig& moe);
  void set_previous(const float* state, float* state_grad) { prev_ = state, prev_grad_ = state_grad; }
  const float* state() const;  // [N, state_width]
  float* state_grad() { return dstate_.data(); }

  // The auxiliary-loss-free bias [E] (fp32, replicated, not trained; zeros unless enabled).
  const std::vector<float>& expert_bias() const { return bias_host_; }
  void set_expert_bias(const std::vector<float>& bias);
  // After an optimizer step: b_i += rate * sign(mean_j c_j - c_i), c = the global batch's
  // (token, slot) counts of this layer (the same on every rank, so the bias stays replicated).
  void update_expert_bias(const std::vector<int64_t>& counts);

 private:
  bool plain() const;  // the fused router_forward computes exactly this gate
  RouterGate gate_desc() const;

  ModelContext& ctx_;
  ParamStore& store_;
  std::string prefix_;
  RouterScore score_;
  ExpertKinds kinds_;
  size_t weight_;
  int64_t H_, E_, slots_;
  RouterClock clock_;
  GateState gate_;
  Tensor logits_, probs_, weights_, lse_, dlogits_, gate_buf_, noise_, bias_;
  Tensor score_weight_;  // [E] MoE++'s balance weights (empty: all 1)
  std::vector<float> bias_host_, noise_host_;
  std::vector<int64_t> tokens_host_;  // global token index of each row (the noise's key)
  IndexTensor idx_;
  bool fixed_routing_ = false;  // idx_ / weights_ hold the single-expert phase's routing
  // Cross-layer state: W_map (gating residual, absent on the first MoE layer), or the input
  // projection and the shared cell (recurrent); this layer's g, its gradient, and scratch.
  bool recurrent_ = false;
  size_t residual_ = ParamStore::npos, input_ = ParamStore::npos;
  std::unique_ptr<RouterGru> gru_;
  Tensor u_, g_, dstate_, dg_, du_;
  const float* prev_ = nullptr;
  float* prev_grad_ = nullptr;
};

}  // namespace origami
