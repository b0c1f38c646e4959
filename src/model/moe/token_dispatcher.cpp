#include "model/moe/token_dispatcher.h"

namespace origami {

TokenDispatcher::TokenDispatcher(ModelContext& ctx) : ctx_(ctx) {
  H_ = ctx.config.model.hidden_size;
  E_ = ctx.config.moe.num_experts;
  k_ = ctx.config.moe.top_k;
  const int64_t N = ctx.shape.tokens();
  permuted_ = Tensor::zeros(ctx.backend, {N * k_, H_});
  counts_ = TensorOf<int64_t>::zeros(ctx.backend, {E_});
  row_ = IndexTensor::zeros(ctx.backend, {N, k_});
  counts_host_.assign(size_t(E_), 0);
}

void TokenDispatcher::dispatch(const float* x, const int32_t* experts) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.shape.tokens();
  be.moe_permute_indices(experts, N, k_, E_, counts_.data(), row_.data());
  // The host needs the group sizes to shape the experts' GEMMs (as Megatron's grouped GEMM does).
  be.copy_to_host(counts_host_.data(), counts_.data(), size_t(E_) * sizeof(int64_t));
  be.moe_permute(x, row_.data(), permuted_.data(), N, k_, H_);
}

void TokenDispatcher::combine(const float* y, const float* weights, float* out) {
  ctx_.backend.moe_unpermute(y, row_.data(), weights, out, ctx_.shape.tokens(), k_, H_);
}

void TokenDispatcher::combine_backward(const float* dout, const float* y, const float* weights,
                                       float* dy, float* dweights) {
  ctx_.backend.moe_unpermute_backward(dout, y, row_.data(), weights, dy, dweights,
                                      ctx_.shape.tokens(), k_, H_);
}

void TokenDispatcher::dispatch_backward(const float* dpermuted, float* dx) {
  ctx_.backend.moe_permute_backward(dpermuted, row_.data(), dx, ctx_.shape.tokens(), k_, H_);
}

}  // namespace origami
