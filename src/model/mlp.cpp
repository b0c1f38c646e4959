#include "model/mlp.h"

#include <cmath>

#include "model/linear.h"

namespace origami {

SwigluMlp::SwigluMlp(ModelContext& ctx, ParamStore& store, const std::string& prefix, int64_t ffn,
                     int num_layers)
    : ctx_(ctx), store_(store), H_(ctx.config.model.hidden_size), F_(ffn) {
  const double std = ctx.config.model.init_std;
  fc1_ = store.declare({.name = prefix + ".fc1.weight", .global_shape = {2 * F_, H_},
                        .init_std = std});
  fc2_ = store.declare({.name = prefix + ".fc2.weight", .global_shape = {H_, F_},
                        .init_std = std / std::sqrt(2.0 * num_layers)});
  const int64_t N = ctx.shape.tokens();
  h_ = Tensor::zeros(ctx.backend, {N, 2 * F_});
  act_ = Tensor::zeros(ctx.backend, {N, F_});
  dact_ = Tensor::zeros(ctx.backend, {N, F_});
  dh_ = Tensor::zeros(ctx.backend, {N, 2 * F_});
}

void SwigluMlp::forward(const float* x, float* out, bool accumulate) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.shape.tokens();
  linear_forward(be, x, store_[fc1_].value.data(), h_.data(), N, H_, 2 * F_);
  be.swiglu_forward(h_.data(), act_.data(), N, F_);
  linear_forward(be, act_.data(), store_[fc2_].value.data(), out, N, F_, H_,
                 accumulate ? 1.f : 0.f);
}

void SwigluMlp::backward(const float* dout, const float* x, float* dx, bool accumulate) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.shape.tokens();
  linear_backward(be, dout, act_.data(), store_[fc2_].value.data(), dact_.data(),
                  store_[fc2_].grad.data(), N, F_, H_);
  be.swiglu_backward(dact_.data(), h_.data(), dh_.data(), N, F_);
  linear_backward(be, dh_.data(), x, store_[fc1_].value.data(), dx, store_[fc1_].grad.data(), N,
                  H_, 2 * F_, accumulate);
}

}  // namespace origami
