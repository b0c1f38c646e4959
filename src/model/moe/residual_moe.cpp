// ResidualMoe: the dense branch, the two-way coefficient and their mix (host reference).
#include "model/moe/residual_moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/host_copy.h"
#include "model/linear.h"

namespace origami {

ResidualMoe::ResidualMoe(ModelContext& ctx, ParamStore& store, const std::string& prefix,
                         int num_layers)
    : ctx_(ctx), store_(store),
      mlp_(ctx, store, prefix + ".residual_mlp", ctx.config.moe.expert_ffn_hidden_size,
           num_layers, /*tensor_parallel=*/false),
      H_(ctx.config.model.hidden_size) {
  coef_ = store.declare({.name = prefix + ".coefficient.weight", .global_shape = {2, H_},
                         .init_std = ctx.config.model.init_std,
                         .tp_replicas = ctx.tp_size() > 1 ? "tp" : ""});
  const int64_t N = ctx.local_tokens();
  const bool full = ctx.recompute_full();
  routed_ = ctx.saved("residual_moe.routed", {N, H_}, full);
  dense_ = ctx.saved("residual_moe.dense", {N, H_}, full);
  logits_ = ctx.saved("residual_moe.logits", {N, 2}, full, /*fp32=*/true);
  // Transient (one layer's backward): shared by every layer.
  dmlp_ = ctx.scratch("residual_moe.dmlp", {N, H_});
  dlogits_ = ctx.scratch("residual_moe.dlogits", {N, 2}, /*fp32=*/true);
}

namespace {
void softmax2(const float* z, double c[2]) {
  const double m = std::max(z[0], z[1]);
  const double e0 = std::exp(double(z[0]) - m), e1 = std::exp(double(z[1]) - m);
  c[0] = e0 / (e0 + e1);
  c[1] = e1 / (e0 + e1);
}
}  // namespace

void ResidualMoe::forward(const float* x, float* out) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  be.copy(routed_.data(), out, size_t(N * H_) * sizeof(float));
  mlp_.forward(x, dense_.data());
  linear_forward(be, x, store_[coef_].compute.data(), logits_.data(), N, H_, 2);
  const auto r = host_copy(be, routed_.data(), N * H_), d = host_copy(be, dense_.data(), N * H_),
             z = host_copy(be, logits_.data(), N * 2);
  std::vector<float> o(size_t(N * H_));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    double c[2];
    softmax2(z.data() + 2 * t, c);
    for (int64_t h = 0; h < H_; ++h) {
      const size_t i = size_t(t * H_ + h);
      o[i] = float(c[0] * r[i] + c[1] * d[i]);
    }
  }
  be.copy_from_host(out, o.data(), o.size() * sizeof(float));
}

void ResidualMoe::backward_mix(const float* dout, float* drouted) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  const auto g = host_copy(be, dout, N * H_), r = host_copy(be, routed_.data(), N * H_),
             d = host_copy(be, dense_.data(), N * H_), z = host_copy(be, logits_.data(), N * 2);
  std::vector<float> dr(size_t(N * H_)), dd(size_t(N * H_)), dz(size_t(N * 2));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    double c[2], dc[2] = {0, 0};
    softmax2(z.data() + 2 * t, c);
    for (int64_t h = 0; h < H_; ++h) {
      const size_t i = size_t(t * H_ + h);
      dr[i] = float(c[0] * g[i]);
      dd[i] = float(c[1] * g[i]);
      dc[0] += double(g[i]) * r[i];
      dc[1] += double(g[i]) * d[i];
    }
    const double dot = c[0] * dc[0] + c[1] * dc[1];
    dz[size_t(2 * t)] = float(c[0] * (dc[0] - dot));
    dz[size_t(2 * t + 1)] = float(c[1] * (dc[1] - dot));
  }
  be.copy_from_host(drouted, dr.data(), dr.size() * sizeof(float));
  be.copy_from_host(dmlp_.data(), dd.data(), dd.size() * sizeof(float));
  be.copy_from_host(dlogits_.data(), dz.data(), dz.size() * sizeof(float));
}

void ResidualMoe::backward_input(const float* x, float* dx) {
  const int64_t N = ctx_.local_tokens();
  mlp_.backward(dmlp_.data(), x, dx, /*accumulate=*/true);
  linear_backward(ctx_.backend, dlogits_.data(), x, store_[coef_].compute.data(), dx,
                  store_[coef_].grad.data(), N, H_, 2, /*accumulate_dx=*/true);
}

}  // namespace origami
