// defines: ResidualMoe (DeepSpeed's residual MoE, PR-MoE: a fixed dense MLP beside the experts)
// Every token also goes through a dense SwiGLU MLP of the expert's shape, and a learned two-way
// softmax mixes the two:  out = moe(x) c0 + mlp(x) c1,  [c0, c1] = softmax(W_coef x).
// (deepspeed/moe/layer.py, use_residual; its Linear(hidden, 2) has a bias, Origami's linears have
// none.) Parameters `<prefix>.residual_mlp.{fc1,fc2}.weight` and `<prefix>.coefficient.weight`
// [2, H], dense and replicated over TP like the shared expert. The two-way mix runs on host
// copies (the reference any backend runs; a device kernel can replace it behind these calls).
#pragma once
#include <string>

#include "model/mlp.h"
#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class ResidualMoe {
 public:
  ResidualMoe(ModelContext& ctx, ParamStore& store, const std::string& prefix, int num_layers);
  // out [N, H]: the routed experts' output in, the mixture out.
  void forward(const float* x, float* out);
  // Backward in two calls, because the layer's dx is first written by the dispatcher:
  // backward_mix: dout [N, H] -> drouted [N, H] (overwritten: the routed output's gradient), and
  // the dense branch's and the coefficient's output gradients kept for backward_input, which
  // adds their input gradients to dx [N, H] and accumulates the parameter gradients.
  void backward_mix(const float* dout, float* drouted);
  void backward_input(const float* x, float* dx);

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  SwigluMlp mlp_;
  size_t coef_;
  int64_t H_;
  Tensor routed_, dense_, logits_;  // saved: the two branches and W_coef x
  Tensor dmlp_, dlogits_;           // from backward_mix to backward_input
};

}  // namespace origami
