// defines: TokenDispatcher (dispatch: permute tokens into expert-major order; combine: weighted
// sum back into token order), each with its exact backward.
// Dropless and local for now: every (token, slot) is computed by its expert on this rank. The
// expert-parallelism issue extends dispatch with the count exchange and all-to-all(v) over EP and
// the all-gather over ETP (and combine with reduce-scatter + all-to-all back) behind this class.
#pragma once
#include <vector>

#include "model/model_context.h"
#include "tensor/tensor.h"

namespace origami {

class TokenDispatcher {
 public:
  explicit TokenDispatcher(ModelContext& ctx);
  // x [N,H], experts [N,k] -> permuted() [N k, H], counts() per expert (host copy).
  void dispatch(const float* x, const int32_t* experts);
  // y [N k, H] expert outputs in permuted order -> out [N,H] = sum_s w[t,s] y[row(t,s)].
  void combine(const float* y, const float* weights, float* out);
  // dout [N,H] -> dy [N k, H], dweights [N,k].
  void combine_backward(const float* dout, const float* y, const float* weights, float* dy,
                        float* dweights);
  // dpermuted [N k, H] -> dx [N,H] (overwritten).
  void dispatch_backward(const float* dpermuted, float* dx);

  const float* permuted() const { return permuted_.data(); }
  const std::vector<int64_t>& counts() const { return counts_host_; }
  const int64_t* counts_device() const { return counts_.data(); }
  int64_t rows() const { return permuted_.dim(0); }

 private:
  ModelContext& ctx_;
  int64_t H_, E_, k_;
  Tensor permuted_;
  TensorOf<int64_t> counts_;
  IndexTensor row_;
  std::vector<int64_t> counts_host_;
};

}  // namespace origami
