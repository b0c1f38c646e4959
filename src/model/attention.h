// defines: Attention (causal grouped-query self-attention with RoPE)
// Fused QKV weight [(nh + 2 nkv) hd, H] whose row blocks are Wq, Wk, Wv (contiguous in a
// row-major [out, in] matrix, so each projection is one GEMM on a pointer offset), and the output
// projection [H, nh hd]. Saves q, k (after RoPE), v, the attention output and its log-sum-exp.
#pragma once
#include <string>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class Attention {
 public:
  Attention(ModelContext& ctx, ParamStore& store, const std::string& prefix, int num_layers);
  // x [N,H] (normed input), out [N,H] (overwritten). positions [N] on the backend.
  void forward(const float* x, const int32_t* positions, float* out);
  // dx [N,H] overwritten; parameter grads accumulated.
  void backward(const float* dout, const float* x, const int32_t* positions, float* dx);

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  size_t qkv_, proj_;
  int64_t H_, nh_, nkv_, hd_;
  Tensor q_, k_, v_, att_, lse_;      // saved activations
  Tensor dq_, dk_, dv_, datt_;        // scratch for backward
};

}  // namespace origami
