// defines: gather_sequence(), reduce_scatter_sequence(), sequence_scatter_grad()
// Entering and leaving a tensor-parallel region under sequence parallelism (Megatron-LM's "g"
// and "g-bar"): outside, each TP rank holds its block of local_tokens() rows; inside (attention,
// dense MLP, LM head), every TP rank needs all context_tokens() rows. Forward gathers on entry
// and reduce-scatters the partial sums on exit; backward does the transposes (reduce-scatter of
// the input gradient, all-gather of the output gradient). With TP = 1 they are copies or no-ops.
#pragma once
#include <string>

#include "model/model_context.h"

namespace origami {

// [context_tokens, width] = the TP ranks' pieces [local_tokens, width] in rank order, gathered
// into the model's scratch buffer `scratch_key`. Returns the gathered rows: `piece` itself when
// TP = 1 (no copy, no buffer).
const float* gather_sequence(ModelContext& ctx, const float* piece, const std::string& scratch_key,
                             int64_t width);
// piece [local_tokens, width] = sum over TP ranks of their block of partial [context_tokens,
// width]. With TP = 1, a copy unless partial == piece.
void reduce_scatter_sequence(ModelContext& ctx, const float* partial, float* piece, int64_t width);

}  // namespace origami
