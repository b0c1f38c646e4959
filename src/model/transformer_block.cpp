#include "model/transformer_block.h"

#include <fmt/format.h>

namespace origami {

TransformerBlock::TransformerBlock(ModelContext& ctx, ParamStore& store, int layer, bool is_moe)
    : ctx_(ctx),
      store_(store),
      attn_norm_(store.declare({.name = fmt::format("layers.{}.attention_norm.weight", layer),
                                .global_shape = {ctx.config.model.hidden_size},
                                .init = InitKind::ones,
                                .weight_decay = false})),
      ffn_norm_(store.declare({.name = fmt::format("layers.{}.ffn_norm.weight", layer),
                               .global_shape = {ctx.config.model.hidden_size},
                               .init = InitKind::ones,
                               .weight_decay = false})),
      attention_(ctx, store, fmt::format("layers.{}.attention", layer),
                 int(ctx.config.model.num_layers)) {
  const int L = int(ctx.config.model.num_layers);
  if (is_moe)
    moe_ = std::make_unique<MoeLayer>(ctx, store, fmt::format("layers.{}.moe", layer), L);
  else
    mlp_ = std::make_unique<SwigluMlp>(ctx, store, fmt::format("layers.{}.mlp", layer),
                                       ctx.config.model.ffn_hidden_size, L);
  const int64_t N = ctx.shape.tokens(), H = ctx.config.model.hidden_size;
  auto& be = ctx.backend;
  for (Tensor* t : {&ln1_, &h_, &ln2_, &branch_, &dln_, &dh_, &dtmp_}) *t = Tensor::zeros(be, {N, H});
  rstd1_ = Tensor::zeros(be, {N});
  rstd2_ = Tensor::zeros(be, {N});
}

void TransformerBlock::forward(const float* x, float* y, const int32_t* positions,
                               const RouterLossScales& s) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.shape.tokens(), H = ctx_.config.model.hidden_size;
  const float eps = float(ctx_.config.model.norm_eps);
  be.rmsnorm_forward(x, store_[attn_norm_].value.data(), ln1_.data(), rstd1_.data(), N, H, eps);
  attention_.forward(ln1_.data(), positions, branch_.data());
  be.add(x, branch_.data(), h_.data(), N * H);
  be.rmsnorm_forward(h_.data(), store_[ffn_norm_].value.data(), ln2_.data(), rstd2_.data(), N, H,
                     eps);
  if (moe_)
    moe_->forward(ln2_.data(), branch_.data(), s);
  else
    mlp_->forward(ln2_.data(), branch_.data());
  be.add(h_.data(), branch_.data(), y, N * H);
}

void TransformerBlock::backward(const float* dy, const float* x, float* dx,
                                const int32_t* positions) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.shape.tokens(), H = ctx_.config.model.hidden_size;
  // FFN branch: dh = dy + RMSNorm'(FFN'(dy))
  if (moe_)
    moe_->backward(dy, ln2_.data(), dln_.data());
  else
    mlp_->backward(dy, ln2_.data(), dln_.data());
  be.rmsnorm_backward(dln_.data(), h_.data(), store_[ffn_norm_].value.data(), rstd2_.data(),
                      dtmp_.data(), store_[ffn_norm_].grad.data(), N, H);
  be.add(dy, dtmp_.data(), dh_.data(), N * H);
  // Attention branch: dx = dh + RMSNorm'(Attention'(dh))
  attention_.backward(dh_.data(), ln1_.data(), positions, dln_.data());
  be.rmsnorm_backward(dln_.data(), x, store_[attn_norm_].value.data(), rstd1_.data(),
                      dtmp_.data(), store_[attn_norm_].grad.data(), N, H);
  be.add(dh_.data(), dtmp_.data(), dx, N * H);
}

}  // namespace origami
