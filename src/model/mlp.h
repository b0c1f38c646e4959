// defines: SwigluMlp (the dense feed-forward block, also used as the MoE shared expert)
// fc1 [2F, H] holds gate rows then up rows (one GEMM yields the fused [N, 2F] SwiGLU input),
// fc2 [F -> H]. Saves the fc1 output and the activation for backward.
#pragma once
#include <string>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class SwigluMlp {
 public:
  SwigluMlp(ModelContext& ctx, ParamStore& store, const std::string& prefix, int64_t ffn,
            int num_layers);
  // out [N,H]: overwritten, or added to when accumulate (shared expert on top of routed ones).
  void forward(const float* x, float* out, bool accumulate = false);
  // dx [N,H]: overwritten, or added to when accumulate.
  void backward(const float* dout, const float* x, float* dx, bool accumulate = false);

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  size_t fc1_, fc2_;
  int64_t H_, F_;
  Tensor h_, act_, dact_, dh_;
};

}  // namespace origami
