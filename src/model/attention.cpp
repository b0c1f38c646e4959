#include "model/attention.h"

#include <cmath>

#include "model/linear.h"

namespace origami {

Attention::Attention(ModelContext& ctx, ParamStore& store, const std::string& prefix,
                     int num_layers)
    : ctx_(ctx), store_(store) {
  const auto& m = ctx.config.model;
  H_ = m.hidden_size;
  nh_ = m.num_attention_heads;
  nkv_ = m.num_query_groups;
  hd_ = H_ / nh_;
  qkv_ = store.declare({.name = prefix + ".qkv.weight",
                        .global_shape = {(nh_ + 2 * nkv_) * hd_, H_},
                        .init_std = m.init_std});
  // GPT-2 / Megatron: residual-branch output projections scaled by 1/sqrt(2 L).
  proj_ = store.declare({.name = prefix + ".proj.weight",
                         .global_shape = {H_, nh_ * hd_},
                         .init_std = m.init_std / std::sqrt(2.0 * num_layers)});
  const int64_t B = ctx.shape.batch, T = ctx.shape.seq, N = B * T;
  auto& be = ctx.backend;
  q_ = Tensor::zeros(be, {N, nh_, hd_});
  k_ = Tensor::zeros(be, {N, nkv_, hd_});
  v_ = Tensor::zeros(be, {N, nkv_, hd_});
  att_ = Tensor::zeros(be, {N, nh_, hd_});
  lse_ = Tensor::zeros(be, {B, nh_, T});
  dq_ = Tensor::zeros(be, {N, nh_, hd_});
  dk_ = Tensor::zeros(be, {N, nkv_, hd_});
  dv_ = Tensor::zeros(be, {N, nkv_, hd_});
  datt_ = Tensor::zeros(be, {N, nh_, hd_});
}

void Attention::forward(const float* x, const int32_t* positions, float* out) {
  auto& be = ctx_.backend;
  const int64_t B = ctx_.shape.batch, T = ctx_.shape.seq, N = B * T;
  const float theta = float(ctx_.config.model.rope_theta);
  const float* w = store_[qkv_].value.data();
  const int64_t qd = nh_ * hd_, kd = nkv_ * hd_;
  linear_forward(be, x, w, q_.data(), N, H_, qd);
  linear_forward(be, x, w + qd * H_, k_.data(), N, H_, kd);
  linear_forward(be, x, w + (qd + kd) * H_, v_.data(), N, H_, kd);
  be.rope_forward(q_.data(), positions, N, nh_, hd_, theta);
  be.rope_forward(k_.data(), positions, N, nkv_, hd_, theta);
  be.attention_forward(q_.data(), k_.data(), v_.data(), att_.data(), lse_.data(), B, T, nh_, nkv_,
                       hd_);
  linear_forward(be, att_.data(), store_[proj_].value.data(), out, N, qd, H_);
}

void Attention::backward(const float* dout, const float* x, const int32_t* positions, float* dx) {
  auto& be = ctx_.backend;
  const int64_t B = ctx_.shape.batch, T = ctx_.shape.seq, N = B * T;
  const float theta = float(ctx_.config.model.rope_theta);
  const int64_t qd = nh_ * hd_, kd = nkv_ * hd_;
  linear_backward(be, dout, att_.data(), store_[proj_].value.data(), datt_.data(),
                  store_[proj_].grad.data(), N, qd, H_);
  be.attention_backward(datt_.data(), q_.data(), k_.data(), v_.data(), att_.data(), lse_.data(),
                        dq_.data(), dk_.data(), dv_.data(), B, T, nh_, nkv_, hd_);
  be.rope_backward(dq_.data(), positions, N, nh_, hd_, theta);
  be.rope_backward(dk_.data(), positions, N, nkv_, hd_, theta);
  const float* w = store_[qkv_].value.data();
  float* dw = store_[qkv_].grad.data();
  linear_backward(be, dq_.data(), x, w, dx, dw, N, H_, qd);
  linear_backward(be, dk_.data(), x, w + qd * H_, dx, dw + qd * H_, N, H_, kd, true);
  linear_backward(be, dv_.data(), x, w + (qd + kd) * H_, dx, dw + (qd + kd) * H_, N, H_, kd, true);
}

}  // namespace origami
