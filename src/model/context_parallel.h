// defines: gather_context(), reduce_scatter_context()
// Context parallelism's key/value exchange (docs/parallelism.md): each CP rank computes keys and
// values for its two chunks only, [2][B][C][width] (ModelContext's token order); attention needs
// them for whole sequences, [B][T][width]. Forward all-gathers over CP and places every rank's
// chunks at their positions; backward is the transpose: the full-sequence gradients are cut back
// into each rank's chunk order and reduce-scattered (summed over the CP ranks whose queries
// attended them). With CP = 1 the two orders coincide and both are copies.
#pragma once
#include "model/model_context.h"

namespace origami {

// full [B, T, width] from local [2, B, C, width] of every CP rank.
void gather_context(ModelContext& ctx, const float* local, float* full, int64_t width);
// local [2, B, C, width] = sum over CP ranks of their slices of full [B, T, width].
void reduce_scatter_context(ModelContext& ctx, const float* full, float* local, int64_t width);

}  // namespace origami
