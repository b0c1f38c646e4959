// defines: SwigluMlp (the dense feed-forward block, also used as the MoE shared expert)
// fc1 [2, F, H] holds the gate rows then the up rows (one GEMM yields the fused [N, 2F] SwiGLU
// input), fc2 [H, F]. Tensor parallel (the dense FFN): fc1 split along F (column parallel, both
// halves, so each rank's slice is one box of the global tensor), fc2 along its input (row
// parallel), the input all-gathered and the output reduce-scattered over the sequence-parallel
// rows. Otherwise (the shared expert) every TP rank holds the whole FFN and runs it on its own
// rows. Saves the fc1 output and the activation for backward.
#pragma once
#include <string>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class SwigluMlp {
 public:
  SwigluMlp(ModelContext& ctx, ParamStore& store, const std::string& prefix, int64_t ffn,
            int num_layers, bool tensor_parallel);
  // x, out [local_tokens, H]. out: overwritten, or added to when accumulate (shared expert on
  // top of routed ones).
  void forward(const float* x, float* out, bool accumulate = false);
  // dx [local_tokens, H]: overwritten, or added to when accumulate.
  void backward(const float* dout, const float* x, float* dx, bool accumulate = false);

 private:
  int64_t rows() const { return tp_ ? ctx_.context_tokens() : ctx_.local_tokens(); }

  ModelContext& ctx_;
  ParamStore& store_;
  bool tp_;  // split over TP (input gathered)
  size_t fc1_, fc2_;
  int64_t H_, F_;  // F_: this rank's slice
  Tensor h_, act_;
};

}  // namespace origami
