// defines: CudaBackend per-block expert counts, the load-balancing loss and the router z-loss
// All queued on the backend's stream, no host wait. Counts are integer atomics (exact, so any
// order gives the same result); the fp64 loss sums are ordered reductions (fixed grid, per-block
// partials or per-bin terms, then one block adding them in order): run-to-run identical, no
// float atomics. Element math in backend/kernel_math.h, shared with the CPU reference.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_launch.h"
#include "backend/kernel_math.h"

namespace origami::cuda {

namespace {
namespace km = kernel_math;
constexpr int kThreads = 256;
constexpr int64_t kMaxPartials = 1024;       // blocks of the first pass of a loss reduction
constexpr int64_t kSharedHistogram = 8192;  // B*E up to this: per-block int32 histograms (32 KB)

__device__ __forceinline__ int64_t grid_start() { return blockIdx.x * int64_t(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

// The (block, expert) bin of slot j, or -1 for an unused slot or an out-of-range value.
__device__ __forceinline__ int64_t count_bin(const int32_t* idx, const int32_t* row_block, int64_t j,
                                             int64_t k, int64_t E, int64_t B, int64_t per) {
  const int32_t e = idx[j];
  const int64_t b = km::block_of_row(row_block, j / k, per);
  return (e < 0 || e >= E || b < 0 || b >= B) ? -1 : b * E + e;
}

__global__ void counts_shared_kernel(const int32_t* idx, const int32_t* row_block, int64_t total,
                                     int64_t k, int64_t E, int64_t B, int64_t per, int64_t* counts) {
  extern __shared__ int32_t hist[];
  const int64_t bins = B * E;
  for (int64_t i = threadIdx.x; i < bins; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  for (int64_t j = grid_start(); j < total; j += grid_stride()) {
    const int64_t bin = count_bin(idx, row_block, j, k, E, B, per);
    if (bin >= 0) atomicAdd(&hist[bin], 1);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < bins; i += blockDim.x)
    if (hist[i]) atomicAdd(reinterpret_cast<unsigned long long*>(counts + i), (unsigned long long)hist[i]);
}

__global__ void counts_global_kernel(const int32_t* idx, const int32_t* row_block, int64_t total,
                                     int64_t k, int64_t E, int64_t B, int64_t per, int64_t* counts) {
  for (int64_t j = grid_start(); j < total; j += grid_stride()) {
    const int64_t bin = count_bin(idx, row_block, j, k, E, B, per);
    if (bin >= 0) atomicAdd(reinterpret_cast<unsigned long long*>(counts + bin), 1ull);
  }
}

__global__ void balance_denominator_kernel(const int64_t* counts, int64_t E, int64_t B,
                                           bool routed_share, double slots, double* denominator) {
  for (int64_t b = grid_start(); b < B; b += grid_stride()) {
    int64_t routed = 0;
    for (int64_t i = 0; i < E; ++i) routed += counts[b * E + i];
    denominator[b] = km::balance_denominator(routed, routed_share, slots);
  }
}

// dprobs for every element.
__global__ void balance_grad_kernel(const int64_t* counts, const double* denominator,
                                    const int32_t* row_block, int64_t N, int64_t E, int64_t B,
                                    int64_t per, double scale, double n, float grad_scale,
                                    float* dprobs) {
  for (int64_t j = grid_start(); j < N * E; j += grid_stride()) {
    const int64_t t = j / E, i = j % E, b = km::block_of_row(row_block, t, per);
    dprobs[j] = (b < 0 || b >= B)
                    ? 0.f
                    : km::balance_grad(grad_scale, scale,
                                       km::balance_fraction(counts[b * E + i], denominator[b]), n);
  }
}

// term[b*E+i] = f[b,i] * P[b,i] / n: one thread block per (block, expert) bin, its threads
// striding the rows (all rows when row_block places them, else the block's own range), then an
// ordered block reduction.
__global__ void balance_term_kernel(const float* probs, const int64_t* counts,
                                    const double* denominator, const int32_t* row_block,
                                    int64_t N, int64_t E, int64_t per, double n, double* term) {
  const int64_t bin = blockIdx.x, b = bin / E, i = bin % E;
  const int64_t lo = row_block ? 0 : b * per, hi = row_block ? N : (b + 1) * per;
  double s = 0.0;
  for (int64_t t = lo + threadIdx.x; t < hi; t += blockDim.x)
    if (!row_block || row_block[t] == b) s += probs[t * E + i];
  s = block_sum(s);
  if (threadIdx.x == 0)
    term[bin] = km::balance_term(km::balance_fraction(counts[bin], denominator[b]), s, n);
}

__global__ void z_loss_partial_kernel(const float* lse, int64_t N, float grad_scale, float* dlse,
                                      double* partial) {
  double s = 0.0;
  for (int64_t t = grid_start(); t < N; t += grid_stride()) {
    const float l = lse[t];
    dlse[t] = km::z_loss_grad(l, grad_scale, N);
    s += double(l) * double(l);
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// *loss += weight * (sum of partials, in order) / divisor
__global__ void accumulate_loss_kernel(const double* partial, int64_t count, double weight,
                                       double divisor, double* loss) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *loss += weight * s / divisor;
}

void check_blocks(const int32_t* row_block, int64_t N, int64_t B, const char* op) {
  require(B >= 1 && N >= 0, "{}: {} rows in {} blocks; allowed: B >= 1", op, N, B);
  require(row_block || N % B == 0, "{}: {} rows do not split into {} equal blocks (give row_block)",
          op, N, B);
}
int64_t rows_per_block(const int32_t* row_block, int64_t N, int64_t B) {
  return row_block || N < B ? 1 : N / B;
}
}  // namespace

void CudaBackend::expert_counts_per_block(const int32_t* idx, const int32_t* row_block, int64_t N,
                                          int64_t k, int64_t E, int64_t B, int64_t* counts) {
  require(E >= 1 && k >= 0, "expert_counts_per_block: E = {}, k = {}; allowed: E >= 1, k >= 0", E, k);
  check_blocks(row_block, N, B, "expert_counts_per_block");
  CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int64_t) * size_t(B * E), stream_));
  const int64_t total = N * k;
  if (total <= 0) return;
  const int64_t per = rows_per_block(row_block, N, B);
  if (B * E <= kSharedHistogram) {
    counts_shared_kernel<<<blocks_for(total, kThreads, 256), kThreads, sizeof(int32_t) * B * E, stream_>>>(
        idx, row_block, total, k, E, B, per, counts);
  } else {
    counts_global_kernel<<<blocks_for(total, kThreads, 4096), kThreads, 0, stream_>>>(
        idx, row_block, total, k, E, B, per, counts);
  }
  check_launch("expert_counts_per_block", {N, k, E, B});
}

void CudaBackend::balance_loss(const float* probs, const int64_t* counts, const int32_t* row_block,
                               int64_t N, int64_t E, int64_t B, bool routed_share, double slots,
                               double scale, double n, float grad_scale, double* loss,
                               float* dprobs) {
  require(E >= 1, "balance_loss: E = {}; allowed: E >= 1", E);
  require(routed_share || slots > 0, "balance_loss: slots = {}; allowed: > 0 (or routed_share)", slots);
  require(n > 0, "balance_loss: n = {}; allowed: > 0", n);
  check_blocks(row_block, N, B, "balance_loss");
  if (N <= 0) return;
  const int64_t per = rows_per_block(row_block, N, B);
  auto* denominator = static_cast<double*>(scratch(sizeof(double) * size_t(B + B * E)));
  double* term = denominator + B;
  balance_denominator_kernel<<<blocks_for(B, 128), 128, 0, stream_>>>(counts, E, B, routed_share,
                                                                      slots, denominator);
  check_launch("balance_loss (denominators)", {B, E});
  balance_grad_kernel<<<blocks_for(N * E, kThreads, 4096), kThreads, 0, stream_>>>(
      counts, denominator, row_block, N, E, B, per, scale, n, grad_scale, dprobs);
  check_launch("balance_loss (gradient)", {N, E, B});
  balance_term_kernel<<<unsigned(B * E), kThreads, 0, stream_>>>(probs, counts, denominator,
                                                                 row_block, N, E, per, n, term);
  check_launch("balance_loss (terms)", {N, E, B});
  accumulate_loss_kernel<<<1, kThreads, 0, stream_>>>(term, B * E, scale, 1.0, loss);
  check_launch("balance_loss (sum)", {N, E, B});
}

void CudaBackend::router_z_loss(const float* lse, int64_t N, float grad_scale, double* loss,
                                float* dlse) {
  if (N <= 0) return;
  const unsigned parts = blocks_for(N, kThreads, kMaxPartials);
  auto* partial = static_cast<double*>(scratch(sizeof(double) * parts));
  z_loss_partial_kernel<<<parts, kThreads, 0, stream_>>>(lse, N, grad_scale, dlse, partial);
  check_launch("router_z_loss", {N});
  accumulate_loss_kernel<<<1, kThreads, 0, stream_>>>(partial, parts, 1.0, double(N), loss);
  check_launch("router_z_loss (sum)", {N});
}

}  // namespace origami::cuda
