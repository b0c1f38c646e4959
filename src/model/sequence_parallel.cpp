// The sequence-parallel all-gather / reduce-scatter over TP that enter and leave every
// tensor-parallel region, and the scatter of a gathered gradient.
#include "model/sequence_parallel.h"

namespace origami {

const float* gather_sequence(ModelContext& ctx, const float* piece, const std::string& scratch_key,
                             int64_t width) {
  if (ctx.tp_size() == 1) return piece;
  float* full = ctx.scratch(scratch_key, {ctx.context_tokens(), width}).data();
  ctx.groups.tp->allgather(piece, full, ctx.local_tokens() * width, CommDType::f32);
  return full;
}

void reduce_scatter_sequence(ModelContext& ctx, const float* partial, float* piece,
                             int64_t width) {
  if (ctx.tp_size() == 1) {
    if (partial != piece)
      ctx.backend.copy(piece, partial, size_t(ctx.local_tokens() * width) * sizeof(float));
    return;
  }
  ctx.groups.tp->reduce_scatter(partial, piece, ctx.local_tokens() * width, CommDType::f32,
                                ReduceOp::sum);
  ctx.backend.round_stored(piece, ctx.local_tokens() * width);  // the sum, stored as an activation
}

}  // namespace origami
