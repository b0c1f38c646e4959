#include "model/moe/moe_layer.h"

#include "model/moe/balance_loss.h"

namespace origami {

MoeLayer::MoeLayer(ModelContext& ctx, ParamStore& store, const std::string& prefix,
                   int num_layers)
    : ctx_(ctx),
      router_(ctx, store, prefix + ".router"),
      dispatcher_(ctx),
      experts_(ctx, store, prefix + ".experts", num_layers) {
  const auto& moe = ctx.config.moe;
  if (moe.shared_expert_ffn_hidden_size > 0)
    shared_expert_ = std::make_unique<SwigluMlp>(ctx, store, prefix + ".shared_expert",
                                                 moe.shared_expert_ffn_hidden_size, num_layers);
  const int64_t N = ctx.shape.tokens(), H = ctx.config.model.hidden_size;
  const int64_t E = moe.num_experts, k = moe.top_k;
  auto& be = ctx.backend;
  expert_out_ = Tensor::zeros(be, {N * k, H});
  dexpert_out_ = Tensor::zeros(be, {N * k, H});
  dpermuted_ = Tensor::zeros(be, {N * k, H});
  dweights_ = Tensor::zeros(be, {N, k});
  dprobs_ = Tensor::zeros(be, {N, E});
  dlse_ = Tensor::zeros(be, {N});
}

void MoeLayer::forward(const float* x, float* out, const RouterLossScales& scales) {
  auto& be = ctx_.backend;
  const auto& moe = ctx_.config.moe;
  const int64_t N = ctx_.shape.tokens();
  // route
  router_.forward(x);
  // dispatch
  dispatcher_.dispatch(x, router_.experts());
  // experts
  experts_.forward(dispatcher_.permuted(), dispatcher_.counts(), expert_out_.data());
  // combine
  dispatcher_.combine(expert_out_.data(), router_.weights(), out);
  if (shared_expert_) shared_expert_->forward(x, out, /*accumulate=*/true);

  stats_.expert_counts = dispatcher_.counts();
  has_balance_grad_ = moe.router.load_balance == "micro_batch";
  stats_.balance_loss =
      has_balance_grad_
          ? micro_batch_balance_loss(be, dispatcher_.counts_device(), router_.probs(), N,
                                     moe.num_experts, moe.top_k, scales.balance, dprobs_.data())
          : 0.0;
  has_z_grad_ = true;  // z-loss is always reported; coefficient 0 makes its gradient 0
  stats_.z_loss = router_z_loss(be, router_.lse(), N, scales.z, dlse_.data());
}

void MoeLayer::backward(const float* dout, const float* x, float* dx) {
  dispatcher_.combine_backward(dout, expert_out_.data(), router_.weights(), dexpert_out_.data(),
                               dweights_.data());
  experts_.backward(dexpert_out_.data(), dispatcher_.permuted(), dispatcher_.counts(),
                    dpermuted_.data());
  dispatcher_.dispatch_backward(dpermuted_.data(), dx);
  router_.backward(dweights_.data(), has_balance_grad_ ? dprobs_.data() : nullptr,
                   has_z_grad_ ? dlse_.data() : nullptr, x, dx);
  if (shared_expert_) shared_expert_->backward(dout, x, dx, /*accumulate=*/true);
}

}  // namespace origami
