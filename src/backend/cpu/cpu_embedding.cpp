// defines: CpuBackend embedding forward/backward
// embedding_backward accumulates rows that may repeat (the same token id twice), so it is
// parallel over column blocks, each walking the tokens in order: thread-count independent.
// A negative id (padding) gives a zero output row and contributes no gradient.
#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_backend.h"

namespace origami {

namespace {
constexpr int64_t kColumnBlock = 64;  // floats per column block: one cache line pair per row
}  // namespace

void CpuBackend::embedding_forward(const int32_t* ids, const float* table, float* out, int64_t n,
                                   int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float* o = out + i * dim;
    if (ids[i] < 0) {
      std::memset(o, 0, sizeof(float) * dim);
    } else {
      std::memcpy(o, table + int64_t(ids[i]) * dim, sizeof(float) * dim);
    }
  }
}

void CpuBackend::embedding_backward(const float* dout, const int32_t* ids, float* dtable,
                                    int64_t n, int64_t dim) {
  const int64_t blocks = (dim + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (n * dim > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kColumnBlock, hi = std::min(dim, lo + kColumnBlock);
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0) continue;
      float* dt = dtable + int64_t(ids[i]) * dim;
      const float* d = dout + i * dim;
      for (int64_t j = lo; j < hi; ++j) dt[j] += d[j];
    }
  }
}

}  // namespace origami
