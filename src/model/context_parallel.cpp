// The CP key/value all-gather and its adjoint, the gradient reduce-scatter, over the chunk
// order ModelContext defines.
#include "model/context_parallel.h"

namespace origami {
namespace {

// Copies between CP rank r's chunk order [2][B][C][w] (at `ranked`) and the sequence order
// [B][T][w] (at `full`), chunk by chunk: to_full = true writes full, false writes ranked.
void place_chunks(ModelContext& ctx, int r, float* ranked, float* full, int64_t w, bool to_full) {
  const int64_t B = ctx.shape.batch, T = ctx.shape.seq, C = ctx.chunk_len();
  const int cp = ctx.cp_size();
  for (int half = 0; half < 2; ++half) {
    const int64_t chunk = half == 0 ? r : 2 * cp - 1 - r;
    for (int64_t b = 0; b < B; ++b) {
      float* a = ranked + ((half * B + b) * C) * w;
      float* f = full + (b * T + chunk * C) * w;
      const size_t bytes = size_t(C * w) * sizeof(float);
      to_full ? ctx.backend.copy(f, a, bytes) : ctx.backend.copy(a, f, bytes);
    }
  }
}

}  // namespace

void gather_context(ModelContext& ctx, const float* local, float* full, int64_t width) {
  const int64_t n = ctx.context_tokens() * width;
  const int cp = ctx.cp_size();
  Tensor all = ctx.scratch("context_parallel.gather", {cp * n});
  if (cp > 1)
    ctx.groups.cp->allgather(local, all.data(), n, CommDType::f32);
  else
    ctx.backend.copy(all.data(), local, size_t(n) * sizeof(float));
  for (int r = 0; r < cp; ++r) place_chunks(ctx, r, all.data() + r * n, full, width, true);
}

void reduce_scatter_context(ModelContext& ctx, const float* full, float* local, int64_t width) {
  const int64_t n = ctx.context_tokens() * width;
  const int cp = ctx.cp_size();
  Tensor all = ctx.scratch("context_parallel.gather", {cp * n});
  for (int r = 0; r < cp; ++r)
    place_chunks(ctx, r, all.data() + r * n, const_cast<float*>(full), width, false);
  if (cp > 1) {
    ctx.groups.cp->reduce_scatter(all.data(), local, n, CommDType::f32, ReduceOp::sum);
    ctx.backend.round_stored(local, n);  // the sum, stored as an activation gradient
  } else {
    ctx.backend.copy(local, all.data(), size_t(n) * sizeof(float));
  }
}

}  // namespace origami
