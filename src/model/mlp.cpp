// SwigluMlp: fc1 -> SwiGLU -> fc2 and the mirrored backward, column / row parallel under TP
// with the sequence-parallel entry and exit.
#include "model/mlp.h"

#include <cmath>

#include "model/linear.h"
#include "model/sequence_parallel.h"

namespace origami {

SwigluMlp::SwigluMlp(ModelContext& ctx, ParamStore& store, const std::string& prefix, int64_t ffn,
                     int num_layers, bool tensor_parallel)
    : ctx_(ctx),
      store_(store),
      tp_(tensor_parallel && ctx.tp_size() > 1),
      H_(ctx.config.model.hidden_size),
      F_(tp_ ? ffn / ctx.tp_size() : ffn) {
  const double std = ctx.config.model.init_std;
  const int64_t f0 = tp_ ? ctx.tp_rank() * F_ : 0;
  const std::string replicas = !tp_ && ctx.tp_size() > 1 ? "tp" : "";
  fc1_ = store.declare(
      {.name = prefix + ".fc1.weight", .global_shape = {2, ffn, H_}, .local_shape = {2, F_, H_},
       .shard = tp_ ? ShardSpec{.dims = {{.dim = 1, .group = "tp", .offset = f0}}} : ShardSpec{},
       .init_std = std, .tp_replicas = replicas});
  fc2_ = store.declare(
      {.name = prefix + ".fc2.weight", .global_shape = {H_, ffn}, .local_shape = {H_, F_},
       .shard = tp_ ? ShardSpec{.dims = {{.dim = 1, .group = "tp", .offset = f0}}} : ShardSpec{},
       .init_std = std / std::sqrt(2.0 * num_layers), .tp_replicas = replicas});
  const bool full = ctx.recompute_full();
  h_ = ctx.saved(prefix.substr(prefix.rfind('.') + 1) + ".h", {rows(), 2 * F_}, full);
  act_ = ctx.saved(prefix.substr(prefix.rfind('.') + 1) + ".act", {rows(), F_}, full);
}

void SwigluMlp::forward(const float* x, float* out, bool accumulate) {
  auto& be = ctx_.backend;
  const int64_t N = rows();
  const float* xf = tp_ ? gather_sequence(ctx_, x, "mlp.x", H_) : x;
  linear_forward(be, xf, store_[fc1_].compute.data(), h_.data(), N, H_, 2 * F_);
  be.swiglu_forward(h_.data(), act_.data(), N, F_);
  if (!tp_) {
    linear_forward(be, act_.data(), store_[fc2_].compute.data(), out, N, F_, H_,
                   accumulate ? 1.f : 0.f);
    return;
  }
  Tensor partial = ctx_.scratch("mlp.partial", {N, H_});
  linear_forward(be, act_.data(), store_[fc2_].compute.data(), partial.data(), N, F_, H_);
  if (!accumulate) return reduce_scatter_sequence(ctx_, partial.data(), out, H_);
  Tensor piece = ctx_.scratch("mlp.piece", {ctx_.local_tokens(), H_});
  reduce_scatter_sequence(ctx_, partial.data(), piece.data(), H_);
  be.axpy(1.f, piece.data(), out, piece.numel());
}

void SwigluMlp::backward(const float* dout, const float* x, float* dx, bool accumulate) {
  auto& be = ctx_.backend;
  const int64_t N = rows();
  const float* dof =
      tp_ ? gather_sequence(ctx_, dout, "mlp.dout", H_) : dout;
  Tensor dact = ctx_.scratch("mlp.dact", {N, F_}), dh = ctx_.scratch("mlp.dh", {N, 2 * F_});
  linear_backward(be, dof, act_.data(), store_[fc2_].compute.data(), dact.data(),
                  store_[fc2_].grad.data(), N, F_, H_);
  be.swiglu_backward(dact.data(), h_.data(), dh.data(), N, F_);
  if (!tp_) {
    linear_backward(be, dh.data(), x, store_[fc1_].compute.data(), dx, store_[fc1_].grad.data(), N,
                    H_, 2 * F_, accumulate);
    return;
  }
  const float* xf = gather_sequence(ctx_, x, "mlp.x", H_);
  Tensor dxf = ctx_.scratch("mlp.dx", {N, H_});
  linear_backward(be, dh.data(), xf, store_[fc1_].compute.data(), dxf.data(),
                  store_[fc1_].grad.data(), N, H_, 2 * F_);
  if (!accumulate) return reduce_scatter_sequence(ctx_, dxf.data(), dx, H_);
  Tensor piece = ctx_.scratch("mlp.piece", {ctx_.local_tokens(), H_});
  reduce_scatter_sequence(ctx_, dxf.data(), piece.data(), H_);
  be.axpy(1.f, piece.data(), dx, piece.numel());
}

}  // namespace origami
