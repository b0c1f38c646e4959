// TransformerBlock: pre-norm attention and FFN sublayers with residuals, and full activation
// recomputation (training.recompute: full) in backward.
#include "model/transformer_block.h"

#include <fmt/format.h>

namespace origami {

TransformerBlock::TransformerBlock(ModelContext& ctx, ParamStore& store, int layer, bool is_moe)
    : ctx_(ctx),
      store_(store),
      attn_norm_(store.declare({.name = fmt::format("layers.{}.attention_norm.weight", layer),
                                .global_shape = {ctx.config.model.hidden_size},
                                .init = InitKind::ones,
                                .weight_decay = false,
                                .tp_replicas = ctx.tp_size() > 1 ? "tp" : ""})),
      ffn_norm_(store.declare({.name = fmt::format("layers.{}.ffn_norm.weight", layer),
                               .global_shape = {ctx.config.model.hidden_size},
                               .init = InitKind::ones,
                               .weight_decay = false,
                               .tp_replicas = ctx.tp_size() > 1 ? "tp" : ""})),
      attention_(ctx, store, fmt::format("layers.{}.attention", layer),
                 int(ctx.config.model.num_layers)) {
  const int L = int(ctx.config.model.num_layers);
  if (is_moe)
    moe_ = std::make_unique<MoeLayer>(ctx, store, fmt::format("layers.{}.moe", layer), L);
  else
    mlp_ = std::make_unique<SwigluMlp>(ctx, store, fmt::format("layers.{}.mlp", layer),
                                       ctx.config.model.ffn_hidden_size, L,
                                       /*tensor_parallel=*/true);
  const int64_t N = ctx.local_tokens(), H = ctx.config.model.hidden_size;
  const bool full = ctx.recompute_full();
  ln1_ = ctx.saved("block.ln1", {N, H}, full);
  h_ = ctx.saved("block.h", {N, H}, full);
  ln2_ = ctx.saved("block.ln2", {N, H}, full);
  rstd1_ = ctx.saved("block.rstd1", {N}, full, /*fp32=*/true);
  rstd2_ = ctx.saved("block.rstd2", {N}, full, /*fp32=*/true);
}

void TransformerBlock::forward(const float* x, float* y, const int32_t* positions,
                               const RouterLossScales& s, ForwardPass pass) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens(), H = ctx_.config.model.hidden_size;
  const float eps = float(ctx_.config.model.norm_eps);
  Tensor branch = ctx_.scratch("block.branch", {N, H});  // attention / FFN output
  be.rmsnorm_forward(x, store_[attn_norm_].compute.data(), ln1_.data(), rstd1_.data(), N, H, eps);
  attention_.forward(ln1_.data(), positions, branch.data());
  be.add(x, branch.data(), h_.data(), N * H);
  be.rmsnorm_forward(h_.data(), store_[ffn_norm_].compute.data(), ln2_.data(), rstd2_.data(), N, H,
                     eps);
  if (moe_)
    moe_->forward(ln2_.data(), branch.data(), s, pass);
  else
    mlp_->forward(ln2_.data(), branch.data());
  be.add(h_.data(), branch.data(), y, N * H);
}

void TransformerBlock::backward(const float* dy, const float* x, float* dx,
                                const int32_t* positions) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens(), H = ctx_.config.model.hidden_size;
  // Full recomputation: this layer's activations were overwritten by later layers (they share
  // the buffers); rebuild them from the saved input. The output goes to scratch.
  if (ctx_.recompute_full())
    forward(x, ctx_.scratch("block.recomputed_y", {N, H}).data(), positions, {},
            ForwardPass::recompute_activations);
  Tensor dln = ctx_.scratch("block.dln", {N, H}), dh = ctx_.scratch("block.dh", {N, H}),
         dtmp = ctx_.scratch("block.dtmp", {N, H});
  // FFN branch: dh = dy + RMSNorm'(FFN'(dy))
  if (moe_)
    moe_->backward(dy, ln2_.data(), dln.data());
  else
    mlp_->backward(dy, ln2_.data(), dln.data());
  be.rmsnorm_backward(dln.data(), h_.data(), store_[ffn_norm_].compute.data(), rstd2_.data(),
                      dtmp.data(), store_[ffn_norm_].grad.data(), N, H);
  be.add(dy, dtmp.data(), dh.data(), N * H);
  // Attention branch: dx = dh + RMSNorm'(Attention'(dh))
  attention_.backward(dh.data(), ln1_.data(), positions, dln.data());
  be.rmsnorm_backward(dln.data(), x, store_[attn_norm_].compute.data(), rstd1_.data(),
                      dtmp.data(), store_[attn_norm_].grad.data(), N, H);
  be.add(dh.data(), dtmp.data(), dx, N * H);
}

}  // namespace origami
