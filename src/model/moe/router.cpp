#include "model/moe/router.h"

#include "model/linear.h"

namespace origami {

Router::Router(ModelContext& ctx, ParamStore& store, const std::string& prefix)
    : ctx_(ctx), store_(store) {
  H_ = ctx.config.model.hidden_size;
  E_ = ctx.config.moe.num_experts;
  k_ = ctx.config.moe.top_k;
  weight_ = store.declare({.name = prefix + ".weight", .global_shape = {E_, H_},
                           .init_std = ctx.config.model.init_std});
  const int64_t N = ctx.shape.tokens();
  auto& be = ctx.backend;
  logits_ = Tensor::zeros(be, {N, E_});
  probs_ = Tensor::zeros(be, {N, E_});
  weights_ = Tensor::zeros(be, {N, k_});
  lse_ = Tensor::zeros(be, {N});
  dlogits_ = Tensor::zeros(be, {N, E_});
  idx_ = IndexTensor::zeros(be, {N, k_});
}

void Router::forward(const float* x) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.shape.tokens();
  linear_forward(be, x, store_[weight_].value.data(), logits_.data(), N, H_, E_);
  be.router_forward(logits_.data(), probs_.data(), idx_.data(), weights_.data(), lse_.data(), N,
                    E_, k_, ctx_.config.moe.router.renormalize);
}

void Router::backward(const float* dweights, const float* dprobs, const float* dlse,
                      const float* x, float* dx) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.shape.tokens();
  be.router_backward(dweights, dprobs, dlse, probs_.data(), idx_.data(), weights_.data(),
                     dlogits_.data(), N, E_, k_, ctx_.config.moe.router.renormalize);
  linear_backward(be, dlogits_.data(), x, store_[weight_].value.data(), dx,
                  store_[weight_].grad.data(), N, H_, E_, /*accumulate_dx=*/true);
}

}  // namespace origami
