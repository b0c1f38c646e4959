// defines: GroupedExperts (E SwiGLU experts computed over variable-sized token groups)
// Weights are stacked per expert: fc1 [E, 2F, H] (gate rows, then up rows), fc2 [E, H, F].
// Each GEMM of a pass is issued as one batched call over the experts' row groups (sizes from the
// dispatcher's counts), so a device backend can run one grouped kernel instead of a host loop.
// Expert gradients reduce over the expert-data-parallel group (GradGroup::expert).
#pragma once
#include <string>
#include <vector>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class GroupedExperts {
 public:
  GroupedExperts(ModelContext& ctx, ParamStore& store, const std::string& prefix, int num_layers);
  // x [M,H] expert-major rows, counts[e] rows per expert (sum = M) -> y [M,H] (overwritten).
  void forward(const float* x, const std::vector<int64_t>& counts, float* y);
  // dy [M,H] -> dx [M,H] (overwritten); weight grads accumulated.
  void backward(const float* dy, const float* x, const std::vector<int64_t>& counts, float* dx);

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  size_t fc1_, fc2_;
  int64_t H_, F_, E_;
  Tensor h_, act_, dact_, dh_;
};

}  // namespace origami
