// defines: TransformerBlock (pre-norm decoder layer)
//   h = x + Attention(RMSNorm(x));  y = h + FFN(RMSNorm(h)),  FFN = MoE or dense SwiGLU MLP.
// Saves the normalised inputs and their rstd; the residual inputs x and h are owned by the caller
// (x) and by the block (h). Backward mirrors forward bottom-up. Everything here works on this
// rank's local_tokens() rows (sequence parallel); attention and the dense MLP gather what they
// need. Norm weights are replicated over TP, so their gradients are summed over it.
#pragma once
#include <memory>
#include <string>

#include "model/attention.h"
#include "model/mlp.h"
#include "model/moe/moe_layer.h"

namespace origami {

class TransformerBlock {
 public:
  TransformerBlock(ModelContext& ctx, ParamStore& store, int layer, bool is_moe);
  // x [N,H] (N = local_tokens) stays alive until backward; y [N,H] overwritten. pass
  // (ForwardPass, model_context.h): recompute_activations re-runs it inside backward
  // (training.recompute: full), replay inside a pipeline stage's backward; neither counts any
  // statistic or loss value of the first pass again.
  void forward(const float* x, float* y, const int32_t* positions, const RouterLossScales& s,
               ForwardPass pass = ForwardPass::first);
  // dy [N,H] -> dx [N,H] (overwritten). With training.recompute: full, re-runs forward first
  // (y is written to scratch).
  void backward(const float* dy, const float* x, float* dx, const int32_t* positions);
  const MoeLayer* moe() const { return moe_.get(); }
  MoeLayer* moe() { return moe_.get(); }

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  size_t attn_norm_, ffn_norm_;
  Attention attention_;
  std::unique_ptr<MoeLayer> moe_;
  std::unique_ptr<SwigluMlp> mlp_;
  Tensor ln1_, rstd1_, h_, ln2_, rstd2_;  // saved (shared across layers under full recompute)
};

}  // namespace origami
