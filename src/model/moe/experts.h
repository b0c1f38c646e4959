// defines: GroupedExperts (this rank's SwiGLU experts over variable-sized token groups)
// Global weights: fc1 [E, 2, F, H] (gate rows, then up rows, per expert) and fc2 [E, H, F]. Expert
// parallelism gives each EP rank E/EP whole experts (dim 0); expert tensor parallelism splits each
// expert's F over ETP ranks (dim 2 of both: fc1 column-parallel, fc2 row-parallel, so the fc2
// outputs are partial sums the dispatcher reduces over ETP). Each GEMM of a pass is one batched
// call over the local experts' row groups. Expert gradients reduce over EDP (GradGroup::expert).
#pragma once
#include <string>
#include <vector>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

// The weights of the experts one pass computes, in the order of its row groups: this rank's
// own slices under expert parallelism, owned and materialised copies under FSSDP.
struct ExpertWeights {
  std::vector<const float*> fc1, fc2;  // [2F_local, H] and [H, F_local] per computed expert
  std::vector<float*> dfc1, dfc2;      // where their gradients accumulate
};

class GroupedExperts {
 public:
  // declare = false (FSSDP): the weights live elsewhere (FssdpExperts) and come with each call.
  GroupedExperts(ModelContext& ctx, ParamStore& store, const std::string& prefix, int num_layers,
                 bool declare = true);
  // x [M,H] rows grouped by computed expert, counts[j] rows of expert j -> y [M,H].
  void forward(const ExpertWeights& w, const float* x, const std::vector<int64_t>& counts, float* y);
  // dy [M,H] -> dx [M,H] (overwritten); weight grads accumulated.
  void backward(const ExpertWeights& w, const float* dy, const float* x,
                const std::vector<int64_t>& counts, float* dx);
  // Allocates the activation buffers now for `rows` computed rows (moe.dropless_reserve); they
  // still grow if a micro-batch brings more.
  void reserve(int64_t rows);
  // Expert parallelism: this rank's E / EP experts (declared by the constructor).
  ExpertWeights local_weights();
  int64_t local_experts() const { return E_; }
  // EvoMoE expert-diversify: every expert but 0 becomes expert 0's weights, each element re-drawn
  // from the init distribution with probability mask_ratio, plus N(0, noise_std) noise; draws
  // are keyed by (seed, name, global index), so any layout spawns the same experts. Expert 0's
  // slice is broadcast over EP (its owner is EP rank 0; each ETP rank holds its own F slice).
  void spawn_from_first(const DiversifyConfig& d);

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  size_t fc1_, fc2_;
  int64_t H_, F_, E_;  // F_ and E_ are this rank's shares
  Tensor h_, act_, dact_, dh_;
};

}  // namespace origami
