// GroupedExperts: one batched GEMM per weight over the local experts' row groups, SwiGLU in
// between; and EvoMoE's spawn of every expert from expert 0.
#include "model/moe/experts.h"

#include <cmath>

#include "base/rng.h"
#include "model/linear.h"

namespace origami {

GroupedExperts::GroupedExperts(ModelContext& ctx, ParamStore& store, const std::string& prefix,
                               int num_layers, bool declare)
    : ctx_(ctx), store_(store) {
  H_ = ctx.config.model.hidden_size;
  const int64_t E = ctx.config.moe.num_experts, F = ctx.config.moe.expert_ffn_hidden_size;
  E_ = E / ctx.ep_size();
  F_ = F / ctx.etp_size();
  if (!declare) return;
  const double std = ctx.config.model.init_std;
  const ShardSpec shard{.dims = {{.dim = 0, .group = "ep", .offset = ctx.ep_rank() * E_},
                                 {.dim = 2, .group = "etp", .offset = ctx.etp_rank() * F_}}};
  fc1_ = store.declare({.name = prefix + ".fc1.weight", .global_shape = {E, 2, F, H_},
                        .local_shape = {E_, 2, F_, H_}, .shard = shard,
                        .grad_group = GradGroup::expert, .init_std = std});
  fc2_ = store.declare({.name = prefix + ".fc2.weight", .global_shape = {E, H_, F},
                        .local_shape = {E_, H_, F_}, .shard = shard,
                        .grad_group = GradGroup::expert,
                        .init_std = std / std::sqrt(2.0 * num_layers)});
}

ExpertWeights GroupedExperts::local_weights() {
  ExpertWeights w;
  Param& p1 = store_[fc1_];
  Param& p2 = store_[fc2_];
  for (int64_t e = 0; e < E_; ++e) {
    w.fc1.push_back(p1.compute.data() + e * 2 * F_ * H_);
    w.fc2.push_back(p2.compute.data() + e * H_ * F_);
    w.dfc1.push_back(p1.grad.data() + e * 2 * F_ * H_);
    w.dfc2.push_back(p2.grad.data() + e * H_ * F_);
  }
  return w;
}

void GroupedExperts::reserve(int64_t rows) {
  auto& be = ctx_.backend;
  grow_rows(be, h_, rows, 2 * F_, ctx_.activation);
  grow_rows(be, act_, rows, F_, ctx_.activation);
  grow_rows(be, dact_, rows, F_, ctx_.activation);
  grow_rows(be, dh_, rows, 2 * F_, ctx_.activation);
}

void GroupedExperts::forward(const ExpertWeights& w, const float* x,
                             const std::vector<int64_t>& counts, float* y) {
  auto& be = ctx_.backend;
  std::vector<GemmDesc> g1, g2;
  int64_t rows = 0;
  for (int64_t c : counts) rows += c;
  grow_rows(be, h_, rows, 2 * F_, ctx_.activation);
  grow_rows(be, act_, rows, F_, ctx_.activation);
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t m = counts[e];
    g1.push_back(linear_fwd_desc(x + row * H_, w.fc1[e], h_.data() + row * 2 * F_, m, H_, 2 * F_));
    g2.push_back(linear_fwd_desc(act_.data() + row * F_, w.fc2[e], y + row * H_, m, F_, H_));
    row += m;
  }
  be.gemm_batched(g1);
  be.swiglu_forward(h_.data(), act_.data(), row, F_);
  be.gemm_batched(g2);
}

void GroupedExperts::backward(const ExpertWeights& w, const float* dy, const float* x,
                              const std::vector<int64_t>& counts, float* dx) {
  auto& be = ctx_.backend;
  std::vector<GemmDesc> dact, dw2s, dxs, dw1s;
  int64_t rows = 0;
  for (int64_t c : counts) rows += c;
  grow_rows(be, dact_, rows, F_, ctx_.activation);
  grow_rows(be, dh_, rows, 2 * F_, ctx_.activation);
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t m = counts[e];
    const float* dy_e = dy + row * H_;
    dact.push_back(linear_dx_desc(dy_e, w.fc2[e], dact_.data() + row * F_, m, F_, H_));
    dw2s.push_back(linear_dw_desc(dy_e, act_.data() + row * F_, w.dfc2[e], m, F_, H_));
    const float* dh_e = dh_.data() + row * 2 * F_;
    dxs.push_back(linear_dx_desc(dh_e, w.fc1[e], dx + row * H_, m, H_, 2 * F_));
    dw1s.push_back(linear_dw_desc(dh_e, x + row * H_, w.dfc1[e], m, H_, 2 * F_));
    row += m;
  }
  be.gemm_batched(dact);
  be.gemm_batched(dw2s);
  be.swiglu_backward(dact_.data(), h_.data(), dh_.data(), row, F_);
  be.gemm_batched(dxs);
  be.gemm_batched(dw1s);
}

void GroupedExperts::spawn_from_first(const DiversifyConfig& d) {
  auto& be = ctx_.backend;
  const uint64_t seed = ctx_.config.training.seed;
  for (size_t which : {fc1_, fc2_}) {
    Param& p = store_[which];
    const int64_t n = p.value.numel(), per = n / E_;  // elements of one local expert
    std::vector<float> host(static_cast<size_t>(n)), first(static_cast<size_t>(per));
    be.copy_to_host(host.data(), p.value.data(), p.value.bytes());
    if (ctx_.ep_rank() == 0) std::copy(host.begin(), host.begin() + per, first.begin());
    if (ctx_.ep_size() > 1) ctx_.groups.ep->broadcast(first.data(), per, CommDType::f32, 0);
    const Rng mask(seed, hash_name(p.spec.name + ".diversify.mask"));
    const Rng init(seed, hash_name(p.spec.name + ".diversify.init"));
    const Rng noise(seed, hash_name(p.spec.name + ".diversify.noise"));
    const int64_t first_expert = p.spec.shard.offset_along(0);
    for (int64_t e = 0; e < E_; ++e) {
      if (first_expert + e == 0) continue;  // expert 0 itself stays
      for (int64_t i = 0; i < per; ++i) {
        const uint64_t g = uint64_t(p.spec.global_index(e * per + i));
        float v = mask.uniform(g) < d.mask_ratio ? float(p.spec.init_std * init.normal(g))
                                                 : first[size_t(i)];
        if (d.noise_std > 0) v += float(d.noise_std * noise.normal(g));
        host[size_t(e * per + i)] = v;
      }
    }
    be.copy_from_host(p.value.data(), host.data(), p.value.bytes());
    if (p.compute.data() != p.value.data()) be.convert(p.value.data(), p.compute.data(), n);
  }
}

}  // namespace origami
