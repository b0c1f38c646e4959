// ZeroComputeExperts: MoE++'s copy and constant experts on host copies of the rank's rows.
#include "model/moe/zero_compute_experts.h"

#include <algorithm>
#include <cmath>

#include "backend/host_copy.h"
#include "model/moe/gating_schedule.h"

namespace origami {

ZeroComputeExperts::ZeroComputeExperts(ModelContext& ctx, ParamStore& store,
                                       const std::string& prefix)
    : ctx_(ctx), store_(store), kinds_(ExpertKinds::of(ctx.config.moe)),
      H_(ctx.config.model.hidden_size), S_(router_slots(ctx.config.moe)) {
  if (kinds_.constant == 0) return;
  const std::string tp = ctx.tp_size() > 1 ? "tp" : "";  // the router's rule: rows differ per TP rank
  weight_ = store.declare({.name = prefix + ".constant_experts.weight",
                           .global_shape = {kinds_.constant, 2, H_},
                           .init_std = ctx.config.model.init_std, .tp_replicas = tp});
  vector_ = store.declare({.name = prefix + ".constant_experts.vector",
                           .global_shape = {kinds_.constant, H_},
                           .init_std = ctx.config.model.init_std, .tp_replicas = tp});
}

void ZeroComputeExperts::mix(const std::vector<float>& W, const float* xt, int64_t j,
                             double a[2]) const {
  double z[2] = {0, 0};
  for (int c = 0; c < 2; ++c) {
    const float* wr = W.data() + (j * 2 + c) * H_;
    for (int64_t h = 0; h < H_; ++h) z[c] += double(wr[h]) * xt[h];
  }
  const double m = std::max(z[0], z[1]);
  const double e0 = std::exp(z[0] - m), e1 = std::exp(z[1] - m);
  a[0] = e0 / (e0 + e1);
  a[1] = e1 / (e0 + e1);
}


std::pair<std::vector<float>, std::vector<float>> ZeroComputeExperts::constant_params() const {
  if (kinds_.constant == 0) return {};
  auto& be = ctx_.backend;
  return {host_copy(be, static_cast<const float*>(store_[weight_].compute.data()), kinds_.constant * 2 * H_),
          host_copy(be, static_cast<const float*>(store_[vector_].compute.data()), kinds_.constant * H_)};
}

void ZeroComputeExperts::forward(const float* x, const int32_t* idx, const float* w, float* out) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  const auto xh = host_copy(be, x, N * H_);
  const auto ih = host_copy(be, idx, N * S_);
  const auto wh = host_copy(be, w, N * S_);
  auto oh = host_copy(be, static_cast<const float*>(out), N * H_);
  const auto [W, V] = constant_params();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    const float* xt = xh.data() + t * H_;
    float* ot = oh.data() + t * H_;
    for (int64_t s = 0; s < S_; ++s) {
      const int64_t e = ih[size_t(t * S_ + s)];
      const double ws = wh[size_t(t * S_ + s)];
      if (e >= kinds_.copy_begin() && e < kinds_.constant_begin()) {
        for (int64_t h = 0; h < H_; ++h) ot[h] = float(ot[h] + ws * xt[h]);
      } else if (e >= kinds_.constant_begin() && e < kinds_.silent_begin()) {
        const int64_t j = e - kinds_.constant_begin();
        double a[2];
        mix(W, xt, j, a);
        const float* v = V.data() + j * H_;
        for (int64_t h = 0; h < H_; ++h) ot[h] = float(ot[h] + ws * (a[0] * xt[h] + a[1] * v[h]));
      }
    }
  }
  be.copy_from_host(out, oh.data(), oh.size() * sizeof(float));
}

void ZeroComputeExperts::backward(const float* dout, const float* x, const int32_t* idx,
                                  const float* w, float* dx, float* dweights) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  const auto dh = host_copy(be, dout, N * H_);
  const auto xh = host_copy(be, x, N * H_);
  const auto ih = host_copy(be, idx, N * S_);
  const auto wh = host_copy(be, w, N * S_);
  auto dxh = host_copy(be, static_cast<const float*>(dx), N * H_);
  auto dwh = host_copy(be, static_cast<const float*>(dweights), N * S_);
  const auto [W, V] = constant_params();
  std::vector<double> dW(W.size(), 0.0), dV(V.size(), 0.0);
  // Rows in order: the parameter gradients are sums over rows, kept deterministic.
  for (int64_t t = 0; t < N; ++t) {
    const float* xt = xh.data() + t * H_;
    const float* gt = dh.data() + t * H_;
    float* dxt = dxh.data() + t * H_;
    for (int64_t s = 0; s < S_; ++s) {
      const int64_t e = ih[size_t(t * S_ + s)];
      const double ws = wh[size_t(t * S_ + s)];
      if (e >= kinds_.copy_begin() && e < kinds_.constant_begin()) {
        double dot = 0;
        for (int64_t h = 0; h < H_; ++h) {
          dot += double(gt[h]) * xt[h];
          dxt[h] = float(dxt[h] + ws * gt[h]);
        }
        dwh[size_t(t * S_ + s)] = float(dwh[size_t(t * S_ + s)] + dot);
      } else if (e >= kinds_.constant_begin() && e < kinds_.silent_begin()) {
        const int64_t j = e - kinds_.constant_begin();
        double a[2];
        mix(W, xt, j, a);
        const float* v = V.data() + j * H_;
        // y = a0 x + a1 v; dw = g.y; dy = w g; da0 = dy.x, da1 = dy.v; dz = a (da - a.da)
        double gy = 0, gx = 0, gv = 0;
        for (int64_t h = 0; h < H_; ++h) {
          gy += double(gt[h]) * (a[0] * xt[h] + a[1] * v[h]);
          gx += double(gt[h]) * xt[h];
          gv += double(gt[h]) * v[h];
        }
        dwh[size_t(t * S_ + s)] = float(dwh[size_t(t * S_ + s)] + gy);
        const double da[2] = {ws * gx, ws * gv};
        const double dot = a[0] * da[0] + a[1] * da[1];
        const double dz[2] = {a[0] * (da[0] - dot), a[1] * (da[1] - dot)};
        const float* w0 = W.data() + (j * 2) * H_;
        const float* w1 = w0 + H_;
        double* dw0 = dW.data() + (j * 2) * H_;
        double* dw1 = dw0 + H_;
        double* dv = dV.data() + j * H_;
        for (int64_t h = 0; h < H_; ++h) {
          dxt[h] = float(dxt[h] + ws * a[0] * gt[h] + dz[0] * w0[h] + dz[1] * w1[h]);
          dw0[h] += dz[0] * xt[h];
          dw1[h] += dz[1] * xt[h];
          dv[h] += ws * a[1] * gt[h];
        }
      }
    }
  }
  be.copy_from_host(dx, dxh.data(), dxh.size() * sizeof(float));
  be.copy_from_host(dweights, dwh.data(), dwh.size() * sizeof(float));
  if (kinds_.constant == 0) return;
  for (auto [id, d] : {std::pair{weight_, &dW}, std::pair{vector_, &dV}}) {
    float* g = store_[id].grad.data();
    auto gh = host_copy(be, static_cast<const float*>(g), int64_t(d->size()));
    for (size_t i = 0; i < gh.size(); ++i) gh[i] = float(gh[i] + (*d)[i]);
    be.copy_from_host(g, gh.data(), gh.size() * sizeof(float));
  }
}

}  // namespace origami
