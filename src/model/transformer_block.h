// defines: TransformerBlock (pre-norm decoder layer)
//   h = x + Attention(RMSNorm(x));  y = h + FFN(RMSNorm(h)),  FFN = MoE or dense SwiGLU MLP.
// Saves the normalised inputs and their rstd; the residual inputs x and h are owned by the caller
// (x) and by the block (h). Backward mirrors forward bottom-up.
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
  // x [N,H] stays alive until backward; y [N,H] overwritten.
  void forward(const float* x, float* y, const int32_t* positions, const RouterLossScales& s);
  // dy [N,H] -> dx [N,H] (overwritten).
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
  Tensor ln1_, rstd1_, h_, ln2_, rstd2_, branch_;  // branch_: attention / FFN output scratch
  Tensor dln_, dh_, dtmp_;
};

}  // namespace origami
