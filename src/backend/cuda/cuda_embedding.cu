// defines: CudaBackend embedding forward/backward
// Forward is one block per row. Backward accumulates rows that may repeat (the same token id
// twice) without atomics: one thread per column walks the tokens in order, so the gradient is
// bitwise reproducible, like the CPU backend's. A negative id (padding) is a zero row.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_launch.h"

namespace origami::cuda {

namespace {
constexpr int kRowThreads = 256;

__global__ void embedding_forward_kernel(const int32_t* ids, const float* table, float* out,
                                         int64_t dim) {
  const int64_t r = blockIdx.x;
  const int32_t id = ids[r];
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
    out[r * dim + j] = id < 0 ? 0.f : table[int64_t(id) * dim + j];
}
// One thread per column, walking the tokens in order.
__global__ void embedding_backward_kernel(const float* dout, const int32_t* ids, float* dtable,
                                          int64_t n, int64_t dim) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= dim) return;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id >= 0) dtable[int64_t(id) * dim + j] += dout[i * dim + j];
  }
}
}  // namespace

void CudaBackend::embedding_forward(const int32_t* ids, const float* table, float* out, int64_t n,
                                    int64_t dim) {
  if (n <= 0) return;
  embedding_forward_kernel<<<unsigned(n), kRowThreads, 0, stream_>>>(ids, table, out, dim);
  check_launch("embedding_forward", {n, dim});
}
void CudaBackend::embedding_backward(const float* dout, const int32_t* ids, float* dtable,
                                     int64_t n, int64_t dim) {
  if (n <= 0) return;
  embedding_backward_kernel<<<blocks_for(dim, 128), 128, 0, stream_>>>(dout, ids, dtable, n, dim);
  check_launch("embedding_backward", {n, dim});
}

}  // namespace origami::cuda
