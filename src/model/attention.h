// defines: Attention (causal grouped-query self-attention with RoPE, tensor/context parallel)
// Projections Wq [nh hd, H], Wk, Wv [nkv hd, H] (row-major [out, in]), Wo [H, nh hd].
// Tensor parallelism (Megatron): each TP rank owns nh/TP query heads and their kv heads (Wq/Wk/Wv
// split by rows, Wo by columns), so attention itself needs no exchange; with fewer kv heads than
// TP ranks, consecutive ranks share one kv head (replicated, its gradient summed over them).
// Sequence parallelism: the input arrives as this rank's block of rows and is all-gathered; the
// row-parallel output is reduce-scattered back. Context parallelism: queries of this rank's two
// chunks attend keys/values all-gathered over CP (context_parallel.h).
// Saves q, k (after RoPE), v, the attention output and its log-sum-exp; with training.recompute
// the last two are recomputed in backward (selective), or all of them are (full).
#pragma once
#include <string>
#include <utility>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class Attention {
 public:
  Attention(ModelContext& ctx, ParamStore& store, const std::string& prefix, int num_layers);
  // x [local_tokens, H] (normed input), out [local_tokens, H] (overwritten). positions
  // [context_tokens] on the backend: each CP-local row's position in its sequence.
  void forward(const float* x, const int32_t* positions, float* out);
  // dx [local_tokens, H] overwritten; parameter grads accumulated.
  void backward(const float* dout, const float* x, const int32_t* positions, float* dx);

 private:
  // CP > 1: the keys and values of whole sequences [B, T, kv heads, hd], gathered into scratch.
  std::pair<Tensor, Tensor> gathered_kv();
  void core_forward();   // q_, k_, v_ -> att_, lse_
  void core_backward(const float* datt, float* dq, float* dk, float* dv);

  ModelContext& ctx_;
  ParamStore& store_;
  size_t wq_, wk_, wv_, proj_;
  int64_t H_, nh_, nkv_, hd_;   // nh_, nkv_: this TP rank's heads
  Tensor q_, k_, v_, att_, lse_;  // saved activations, [context_tokens, heads, hd] / [.., T]
};

}  // namespace origami
