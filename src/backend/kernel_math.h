// defines: ORIGAMI_HD, kernel_math:: per-element functions both backends run
// The per-element bodies of the ops, written once: a CPU loop (cpu_*.cpp) and a CUDA thread
// (cuda_*.cu) call the same inline function, so the reference and the kernel cannot drift
// apart. Only scalar math here (no loops over rows, no memory layout, no allocation); what is
// accumulated in fp64 and what is rounded to fp32 is decided in these functions.
#pragma once
#include <cmath>
#include <cstdint>

#include "backend/backend.h"

// __host__ __device__ under nvcc, nothing for the host compiler.
#ifdef __CUDACC__
#define ORIGAMI_HD __host__ __device__
#else
#define ORIGAMI_HD
#endif

namespace origami::kernel_math {

// ---- softmax cross-entropy --------------------------------------------------------------------

// The targets Backend::cross_entropy_* accept over a vocabulary (shard) of V: a token id in
// [0, V), -1 (ignored row) or Backend::kTargetInOtherShard. The caller checks (the model, where
// it builds the targets); the CPU backend checks again, a device backend does not wait to.
ORIGAMI_HD inline bool valid_target(int32_t t, int64_t V) {
  return (t >= 0 && t < V) || t == -1 || t == Backend::kTargetInOtherShard;
}

// ---- router auxiliary losses (Backend::expert_counts_per_block, balance_loss, router_z_loss) ----

// block(t): row_block[t] when given, else t / rows_per_block (rows_per_block = N / B).
ORIGAMI_HD inline int64_t block_of_row(const int32_t* row_block, int64_t t,
                                       int64_t rows_per_block) {
  return row_block ? int64_t(row_block[t]) : t / rows_per_block;
}
// d_b: the block's routed slots (at least 1, so an empty block's f stays 0) or the fixed slots.
ORIGAMI_HD inline double balance_denominator(int64_t routed, bool routed_share, double slots) {
  return routed_share ? double(routed < 1 ? int64_t(1) : routed) : slots;
}
// f[b,i] = counts[b,i] / d_b
ORIGAMI_HD inline double balance_fraction(int64_t count, double denominator) {
  return double(count) / denominator;
}
// dprobs[t,i] = grad_scale * scale * f[block(t), i] / n (in this order: the model's original
// formula, so micro_batch results stayed bit-identical when the loss moved to the backend)
ORIGAMI_HD inline float balance_grad(float grad_scale, double scale, double f, double n) {
  return float(double(grad_scale) * scale * f / n);
}
// One (block, expert) term of the balance loss before the outer scale: f * P / n.
ORIGAMI_HD inline double balance_term(double f, double column_sum, double n) {
  return f * column_sum / n;
}
// dlse[t] = grad_scale * 2 * lse[t] / N
ORIGAMI_HD inline float z_loss_grad(float lse, float grad_scale, int64_t N) {
  return float(double(grad_scale) * 2.0 * double(lse) / double(N));
}


}  // namespace origami::kernel_math
