// defines: RouterGru (RMoE's GRU cell, one set of weights shared by every MoE layer's router)
// h' = GRU(u, h) in PyTorch's gate order and formulas (torch.nn.GRUCell):
//   r = sigmoid(W_ir u + b_ir + W_hr h + b_hr)        z = sigmoid(W_iz u + b_iz + W_hz h + b_hz)
//   n = tanh(W_in u + b_in + r * (W_hn h + b_hn))     h' = (1 - z) * n + z * h
// Parameters `router_gru.{weight_ih, weight_hh}` [3D, D] and `router_gru.{bias_ih, bias_hh}`
// [3D], declared by the first router that needs them and found by the others (one cell for the
// whole model, as in RMoE); dense, replicated over TP like the routers. Each router holds its own
// RouterGru for its buffers (the cell's pre-activations, kept for backward). The two GEMMs per
// pass run on the backend; the gate arithmetic on host copies (the reference; a fused kernel can
// replace it behind forward / backward).
#pragma once
#include <string>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class RouterGru {
 public:
  RouterGru(ModelContext& ctx, ParamStore& store, int64_t dim);
  // u, h [N, D] (h null: the zero state of the first MoE layer) -> out [N, D].
  void forward(const float* u, const float* h, float* out);
  // dout [N, D] -> du [N, D] (overwritten), dh [N, D] (added to; skipped when h was null);
  // the cell's parameter gradients accumulated. u, h as in forward.
  void backward(const float* dout, const float* u, const float* h, float* du, float* dh);

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  int64_t D_;
  size_t w_ih_, w_hh_, b_ih_, b_hh_;
  Tensor gi_, gh_;  // [N, 3D] W_ih u + b_ih and W_hh h + b_hh of the last forward
  Tensor dgi_, dgh_;
};

}  // namespace origami
