// defines: ZeroComputeExperts (MoE++'s copy and constant experts, computed beside the dispatcher)
// The router selects them like FFN experts (ExpertKinds: rows after the FFN experts), but they
// cost O(H) per token and hold O(H) parameters, so every rank computes them for its own rows and
// they never enter the all-to-all (MoE++ replicates them on every GPU for the same reason):
//   copy j:     E(x) = x
//   constant j: E(x) = a1 x + a2 v_j,  [a1, a2] = softmax(W_j x),  W_j [2, H] and v_j [H] trained
// Parameters `<prefix>.constant_experts.weight` [C, 2, H] and `.vector` [C, H] are dense (reduced
// over DP x CP, and over TP like the router). Zero and null experts need nothing here: the gate
// gives them weight 0 (RouterGate::silent_from).
//
// The arithmetic runs on host copies of the rows (copy_to_host / copy_from_host), the reference
// that any backend runs as is, like the generalised router; a device kernel can replace it behind
// these two calls. Nothing is saved between forward and backward (a and E(x) are recomputed from
// x), so recomputation and pipeline replays need no care.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "model/model_context.h"
#include "model/moe/expert_kinds.h"
#include "model/parameters.h"

namespace origami {

class ZeroComputeExperts {
 public:
  ZeroComputeExperts(ModelContext& ctx, ParamStore& store, const std::string& prefix);
  // out [N, H] += sum over the token's slots s on a copy / constant expert of w[t,s] E(x_t).
  // idx, w [N, slots]: the router's choice over all of its rows.
  void forward(const float* x, const int32_t* idx, const float* w, float* out);
  // dx [N, H] += the gradient through these experts; dweights [N, slots] += dout . E(x) on their
  // slots (the dispatcher's combine gave them 0); parameter gradients accumulated.
  void backward(const float* dout, const float* x, const int32_t* idx, const float* w, float* dx,
                float* dweights);

 private:
  // Host copies of the constant experts' W [C, 2, H] and v [C, H] (empty without them).
  std::pair<std::vector<float>, std::vector<float>> constant_params() const;
  // softmax(W_j x) of constant expert j for one row.
  void mix(const std::vector<float>& W, const float* xt, int64_t j, double a[2]) const;

  ModelContext& ctx_;
  ParamStore& store_;
  ExpertKinds kinds_;
  int64_t H_, S_;
  size_t weight_ = 0, vector_ = 0;  // valid when kinds_.constant > 0
};

}  // namespace origami
