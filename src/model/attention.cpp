// Attention forward and backward: projections, RoPE, the backend's flash-style GQA kernel
// (offset form under CP), and the TP / CP exchanges at the points where they happen.
#include "model/attention.h"

#include <cmath>

#include "model/context_parallel.h"
#include "model/linear.h"
#include "model/sequence_parallel.h"

namespace origami {

Attention::Attention(ModelContext& ctx, ParamStore& store, const std::string& prefix,
                     int num_layers)
    : ctx_(ctx), store_(store) {
  const auto& m = ctx.config.model;
  const int tp = ctx.tp_size(), t = ctx.tp_rank();
  H_ = m.hidden_size;
  hd_ = H_ / m.num_attention_heads;
  nh_ = m.num_attention_heads / tp;
  // kv heads: split like the query heads, or (TP > kv heads) one head per run of TP/nkv ranks.
  const int64_t nkv = m.num_query_groups;
  nkv_ = std::max<int64_t>(nkv / tp, 1);
  const int64_t kv_first = nkv >= tp ? t * nkv_ : t / (tp / nkv);
  auto rows_of = [&](int64_t first_head) {
    return tp > 1 ? ShardSpec{.dims = {{.dim = 0, .group = "tp", .offset = first_head * hd_}}}
                  : ShardSpec{};
  };
  const std::string kv_replicas = nkv < tp ? "tp_kv" : "";
  wq_ = store.declare({.name = prefix + ".q.weight", .global_shape = {m.num_attention_heads * hd_, H_},
                       .local_shape = {nh_ * hd_, H_}, .shard = rows_of(t * nh_),
                       .init_std = m.init_std});
  wk_ = store.declare({.name = prefix + ".k.weight", .global_shape = {nkv * hd_, H_},
                       .local_shape = {nkv_ * hd_, H_}, .shard = rows_of(kv_first),
                       .init_std = m.init_std, .tp_replicas = kv_replicas});
  wv_ = store.declare({.name = prefix + ".v.weight", .global_shape = {nkv * hd_, H_},
                       .local_shape = {nkv_ * hd_, H_}, .shard = rows_of(kv_first),
                       .init_std = m.init_std, .tp_replicas = kv_replicas});
  // GPT-2 / Megatron: residual-branch output projections scaled by 1/sqrt(2 L).
  proj_ = store.declare(
      {.name = prefix + ".proj.weight", .global_shape = {H_, m.num_attention_heads * hd_},
       .local_shape = {H_, nh_ * hd_},
       .shard = tp > 1 ? ShardSpec{.dims = {{.dim = 1, .group = "tp", .offset = t * nh_ * hd_}}}
                       : ShardSpec{},
       .init_std = m.init_std / std::sqrt(2.0 * num_layers)});
  const int64_t N = ctx.context_tokens();
  const bool full = ctx.recompute_full(), core = ctx.recompute_attention();
  q_ = ctx.saved("attention.q", {N, nh_, hd_}, full);
  k_ = ctx.saved("attention.k", {N, nkv_, hd_}, full);
  v_ = ctx.saved("attention.v", {N, nkv_, hd_}, full);
  att_ = ctx.saved("attention.out", {N, nh_, hd_}, core);
  lse_ = ctx.saved("attention.lse", {N * nh_}, core, /*fp32=*/true);
}

std::pair<Tensor, Tensor> Attention::gathered_kv() {
  const int64_t kw = nkv_ * hd_, rows = ctx_.shape.batch * ctx_.shape.seq;
  Tensor kf = ctx_.scratch("attention.k_full", {rows, kw});
  Tensor vf = ctx_.scratch("attention.v_full", {rows, kw});
  gather_context(ctx_, k_.data(), kf.data(), kw);
  gather_context(ctx_, v_.data(), vf.data(), kw);
  return {kf, vf};
}

// Causal attention of this rank's queries. CP = 1: one square call over [B, T]. CP > 1: each of
// the two chunks [B, C] attends the gathered keys [B, T] from its position on.
void Attention::core_forward() {
  auto& be = ctx_.backend;
  const int64_t B = ctx_.shape.batch, T = ctx_.shape.seq, cp = ctx_.cp_size();
  if (cp == 1) {
    be.attention_forward(q_.data(), k_.data(), v_.data(), att_.data(), lse_.data(), B, T, nh_,
                         nkv_, hd_);
    return;
  }
  const int64_t C = ctx_.chunk_len(), qw = nh_ * hd_;
  const auto [kf, vf] = gathered_kv();
  for (int64_t half = 0; half < 2; ++half) {
    const int64_t chunk = half == 0 ? ctx_.cp_rank() : 2 * cp - 1 - ctx_.cp_rank();
    be.attention_forward_offset(q_.data() + half * B * C * qw, kf.data(), vf.data(),
                                att_.data() + half * B * C * qw, lse_.data() + half * B * nh_ * C,
                                B, C, T, chunk * C, nh_, nkv_, hd_);
  }
}

void Attention::core_backward(const float* datt, float* dq, float* dk, float* dv) {
  auto& be = ctx_.backend;
  const int64_t B = ctx_.shape.batch, T = ctx_.shape.seq, cp = ctx_.cp_size();
  if (cp == 1) {
    be.attention_backward(datt, q_.data(), k_.data(), v_.data(), att_.data(), lse_.data(), dq, dk,
                          dv, B, T, nh_, nkv_, hd_);
    return;
  }
  const int64_t C = ctx_.chunk_len(), kw = nkv_ * hd_, qw = nh_ * hd_;
  // Keys and values gathered again rather than kept from forward: B T kw floats per layer saved.
  const auto [kf, vf] = gathered_kv();
  Tensor dkf = ctx_.scratch("attention.dk_full", {2, B * T, kw});
  Tensor dvf = ctx_.scratch("attention.dv_full", {2, B * T, kw});
  for (int64_t half = 0; half < 2; ++half) {
    const int64_t chunk = half == 0 ? ctx_.cp_rank() : 2 * cp - 1 - ctx_.cp_rank();
    be.attention_backward_offset(datt + half * B * C * qw, q_.data() + half * B * C * qw,
                                 kf.data(), vf.data(), att_.data() + half * B * C * qw,
                                 lse_.data() + half * B * nh_ * C, dq + half * B * C * qw,
                                 dkf.data() + half * B * T * kw, dvf.data() + half * B * T * kw, B,
                                 C, T, chunk * C, nh_, nkv_, hd_);
  }
  be.axpy(1.f, dkf.data() + B * T * kw, dkf.data(), B * T * kw);
  be.axpy(1.f, dvf.data() + B * T * kw, dvf.data(), B * T * kw);
  reduce_scatter_context(ctx_, dkf.data(), dk, kw);
  reduce_scatter_context(ctx_, dvf.data(), dv, kw);
}

void Attention::forward(const float* x, const int32_t* positions, float* out) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.context_tokens();
  const float theta = float(ctx_.config.model.rope_theta);
  const int64_t qd = nh_ * hd_, kd = nkv_ * hd_;
  const float* xf = gather_sequence(ctx_, x, "attention.x", H_);
  linear_forward(be, xf, store_[wq_].compute.data(), q_.data(), N, H_, qd);
  linear_forward(be, xf, store_[wk_].compute.data(), k_.data(), N, H_, kd);
  linear_forward(be, xf, store_[wv_].compute.data(), v_.data(), N, H_, kd);
  be.rope_forward(q_.data(), positions, N, nh_, hd_, theta);
  be.rope_forward(k_.data(), positions, N, nkv_, hd_, theta);
  core_forward();
  // Row-parallel output projection: partial sums over the TP ranks' heads.
  float* partial = ctx_.tp_size() > 1 ? ctx_.scratch("attention.partial", {N, H_}).data() : out;
  linear_forward(be, att_.data(), store_[proj_].compute.data(), partial, N, qd, H_);
  reduce_scatter_sequence(ctx_, partial, out, H_);
}

void Attention::backward(const float* dout, const float* x, const int32_t* positions, float* dx) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.context_tokens();
  const float theta = float(ctx_.config.model.rope_theta);
  const int64_t qd = nh_ * hd_, kd = nkv_ * hd_;
  if (ctx_.recompute_attention() && !ctx_.recompute_full()) core_forward();  // selective
  const float* dof = gather_sequence(ctx_, dout, "attention.dout", H_);
  Tensor datt = ctx_.scratch("attention.datt", {N, qd});
  linear_backward(be, dof, att_.data(), store_[proj_].compute.data(), datt.data(),
                  store_[proj_].grad.data(), N, qd, H_);
  Tensor dq = ctx_.scratch("attention.dq", {N, qd}), dk = ctx_.scratch("attention.dk", {N, kd}),
         dv = ctx_.scratch("attention.dv", {N, kd});
  core_backward(datt.data(), dq.data(), dk.data(), dv.data());
  be.rope_backward(dq.data(), positions, N, nh_, hd_, theta);
  be.rope_backward(dk.data(), positions, N, nkv_, hd_, theta);
  // The gathered input is needed again for the weight gradients: gathered once more, not kept.
  const float* xf = gather_sequence(ctx_, x, "attention.x", H_);
  float* dxf = ctx_.tp_size() > 1 ? ctx_.scratch("attention.dx", {N, H_}).data() : dx;
  linear_backward(be, dq.data(), xf, store_[wq_].compute.data(), dxf, store_[wq_].grad.data(), N, H_,
                  qd);
  linear_backward(be, dk.data(), xf, store_[wk_].compute.data(), dxf, store_[wk_].grad.data(), N, H_,
                  kd, true);
  linear_backward(be, dv.data(), xf, store_[wv_].compute.data(), dxf, store_[wv_].grad.data(), N, H_,
                  kd, true);
  reduce_scatter_sequence(ctx_, dxf, dx, H_);
}

}  // namespace origami
