// RouterGru: the shared GRU cell of the recurrent router, GEMMs on the backend, gates on host.
#include "model/moe/router_gru.h"

#include <cmath>
#include <vector>

#include "backend/host_copy.h"
#include "model/linear.h"

namespace origami {

namespace {
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

size_t declare_once(ParamStore& store, ParamSpec spec) {
  const size_t i = store.index_of(spec.name);
  return i != ParamStore::npos ? i : store.declare(std::move(spec));
}
}  // namespace

RouterGru::RouterGru(ModelContext& ctx, ParamStore& store, int64_t dim)
    : ctx_(ctx), store_(store), D_(dim) {
  // PyTorch's GRUCell init is U(-1/sqrt(D), 1/sqrt(D)); Origami draws every weight from a normal,
  // here with that range's standard deviation.
  const double std = 1.0 / std::sqrt(3.0 * double(dim));
  const std::string tp = ctx.tp_size() > 1 ? "tp" : "";
  // Under pipeline parallelism every stage holds the cell; stage 0's copy is the one that
  // counts once (norm, checkpoint), the gradients are summed over the stages.
  const bool pp = ctx.pp_size() > 1;
  auto spec = [&](const char* name, std::vector<int64_t> shape, bool decay) {
    return ParamSpec{.name = std::string("router_gru.") + name, .global_shape = std::move(shape),
                     .init_std = std, .weight_decay = decay, .tp_replicas = tp,
                     .pipeline_copy = pp && ctx.pp_rank() > 0, .pipeline_shared = pp};
  };
  w_ih_ = declare_once(store, spec("weight_ih", {3 * D_, D_}, true));
  w_hh_ = declare_once(store, spec("weight_hh", {3 * D_, D_}, true));
  b_ih_ = declare_once(store, spec("bias_ih", {3 * D_}, false));
  b_hh_ = declare_once(store, spec("bias_hh", {3 * D_}, false));
  const int64_t N = ctx.local_tokens();
  auto& be = ctx.backend;
  gi_ = Tensor::zeros(be, {N, 3 * D_});
  gh_ = Tensor::zeros(be, {N, 3 * D_});
  dgi_ = ctx.scratch("router_gru.dgi", {N, 3 * D_}, /*fp32=*/true);
  dgh_ = ctx.scratch("router_gru.dgh", {N, 3 * D_}, /*fp32=*/true);
}

void RouterGru::forward(const float* u, const float* h, float* out) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens(), D = D_;
  linear_forward(be, u, store_[w_ih_].compute.data(), gi_.data(), N, D, 3 * D);
  if (h)
    linear_forward(be, h, store_[w_hh_].compute.data(), gh_.data(), N, D, 3 * D);
  else
    be.fill(gh_.data(), 0.f, N * 3 * D);
  auto gi = host_copy(be, gi_.data(), N * 3 * D), gh = host_copy(be, gh_.data(), N * 3 * D);
  const auto bi = host_copy(be, store_[b_ih_].compute.data(), 3 * D),
             bh = host_copy(be, store_[b_hh_].compute.data(), 3 * D);
  const std::vector<float> hp = h ? host_copy(be, h, N * D) : std::vector<float>(size_t(N * D), 0.f);
  std::vector<float> o(size_t(N * D));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    float* a = gi.data() + t * 3 * D;
    float* b = gh.data() + t * 3 * D;
    for (int64_t j = 0; j < 3 * D; ++j) a[j] += bi[size_t(j)], b[j] += bh[size_t(j)];
    for (int64_t d = 0; d < D; ++d) {
      const double r = sigmoid(double(a[d]) + b[d]), z = sigmoid(double(a[D + d]) + b[D + d]);
      const double n = std::tanh(double(a[2 * D + d]) + r * b[2 * D + d]);
      o[size_t(t * D + d)] = float((1.0 - z) * n + z * hp[size_t(t * D + d)]);
    }
  }
  be.copy_from_host(gi_.data(), gi.data(), gi.size() * sizeof(float));  // with the biases
  be.copy_from_host(gh_.data(), gh.data(), gh.size() * sizeof(float));
  be.copy_from_host(out, o.data(), o.size() * sizeof(float));
}

void RouterGru::backward(const float* dout, const float* u, const float* h, float* du,
                         float* dh) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens(), D = D_;
  const auto gi = host_copy(be, gi_.data(), N * 3 * D), gh = host_copy(be, gh_.data(), N * 3 * D),
             g = host_copy(be, dout, N * D);
  const std::vector<float> hp = h ? host_copy(be, h, N * D) : std::vector<float>(size_t(N * D), 0.f);
  std::vector<float> dgi(size_t(N * 3 * D)), dgh(size_t(N * 3 * D)), dhz(size_t(N * D));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) {
    const float* a = gi.data() + t * 3 * D;
    const float* b = gh.data() + t * 3 * D;
    for (int64_t d = 0; d < D; ++d) {
      const size_t i = size_t(t * D + d);
      const double r = sigmoid(double(a[d]) + b[d]), z = sigmoid(double(a[D + d]) + b[D + d]);
      const double n = std::tanh(double(a[2 * D + d]) + r * b[2 * D + d]);
      const double go = g[i];
      const double dn = go * (1.0 - z), dz = go * (hp[i] - n);
      const double dan = dn * (1.0 - n * n);
      const double dar = dan * b[2 * D + d] * r * (1.0 - r);
      const double daz = dz * z * (1.0 - z);
      float* gi_t = dgi.data() + t * 3 * D;
      float* gh_t = dgh.data() + t * 3 * D;
      gi_t[d] = gh_t[d] = float(dar);
      gi_t[D + d] = gh_t[D + d] = float(daz);
      gi_t[2 * D + d] = float(dan);
      gh_t[2 * D + d] = float(dan * r);
      dhz[i] = float(go * z);  // the direct path h -> z h
    }
  }
  // Bias gradients: column sums in row order (deterministic).
  for (auto [b, d] : {std::pair{b_ih_, &dgi}, std::pair{b_hh_, &dgh}}) {
    auto gb = host_copy(be, store_[b].grad.data(), 3 * D);
    for (int64_t j = 0; j < 3 * D; ++j) {
      double s = 0;
      for (int64_t t = 0; t < N; ++t) s += (*d)[size_t(t * 3 * D + j)];
      gb[size_t(j)] = float(gb[size_t(j)] + s);
    }
    be.copy_from_host(store_[b].grad.data(), gb.data(), gb.size() * sizeof(float));
  }
  be.copy_from_host(dgi_.data(), dgi.data(), dgi.size() * sizeof(float));
  be.copy_from_host(dgh_.data(), dgh.data(), dgh.size() * sizeof(float));
  linear_backward(be, dgi_.data(), u, store_[w_ih_].compute.data(), du, store_[w_ih_].grad.data(), N,
                  D, 3 * D);
  if (!h) return;
  auto dhh = host_copy(be, static_cast<const float*>(dh), N * D);
  for (size_t i = 0; i < dhh.size(); ++i) dhh[i] += dhz[i];
  be.copy_from_host(dh, dhh.data(), dhh.size() * sizeof(float));
  linear_backward(be, dgh_.data(), h, store_[w_hh_].compute.data(), dh, store_[w_hh_].grad.data(), N,
                  D, 3 * D, /*accumulate_dx=*/true);
}

}  // namespace origami
