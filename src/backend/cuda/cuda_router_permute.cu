// defines: CudaBackend router forward/backward and the MoE token permutation ops
// The router is fp32 with fp64 softmax sums, one thread per token (E is small), running the CPU
// reference's row functions (kernel_math.h), so expert choices agree with it down to ties.
// moe_permute_indices is a stable counting sort on the device in three passes: per-chunk expert
// counts, a scan over (expert, chunk), then the ranks inside each chunk from warp matching
// (__match_any_sync), taken in element order so the sorted buffer keeps token, then slot order.
// The data movement ops give every output row one owner (no atomics).
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_launch.h"
#include "backend/kernel_math.h"

namespace origami::cuda {

namespace {
constexpr int kChunk = 1024;  // (token, slot) elements per chunk of the counting sort
constexpr int kMaxExperts = 8192;

__global__ void router_forward_kernel(const float* logits, float* probs, int32_t* idx,
                                      float* weights, float* lse, int64_t N, int64_t E, int64_t k,
                                      bool renormalize) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  lse[t] = kernel_math::router_forward_row(logits + t * E, E, k, renormalize, probs + t * E,
                                           idx + t * k, weights + t * k);
}

__global__ void router_backward_kernel(const float* dweights, const float* dprobs,
                                       const float* dlse, const float* probs, const int32_t* idx,
                                       const float* weights, float* dlogits, int64_t N, int64_t E,
                                       int64_t k, bool renormalize) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  kernel_math::router_backward_row(probs + t * E, idx + t * k, weights + t * k, dweights + t * k,
                                   dprobs ? dprobs + t * E : nullptr, dlse ? double(dlse[t]) : 0.0,
                                   E, k, renormalize, dlogits + t * E);
}

// Pass 1: counts[chunk][e] of the chunk's elements routed to e; flags an out-of-range expert.
__global__ void chunk_count_kernel(const int32_t* idx, int64_t total, int64_t E, int32_t* chunk_counts,
                                   int32_t* bad) {
  extern __shared__ int32_t cnt[];
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  const int64_t lo = int64_t(blockIdx.x) * kChunk, hi = min(total, lo + kChunk);
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const int32_t e = idx[i];
    if (e >= E) atomicMax(bad, 1);
    else if (e >= 0) atomicAdd(&cnt[e], 1);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) chunk_counts[blockIdx.x * E + e] = cnt[e];
}

// Pass 2 (one block): chunk_counts becomes each chunk's first row per expert; counts = totals.
__global__ void chunk_scan_kernel(int32_t* chunk_counts, int64_t chunks, int64_t E, int64_t* counts,
                                  int64_t* offsets) {
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int64_t run = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const int32_t n = chunk_counts[c * E + e];
      chunk_counts[c * E + e] = int32_t(run);
      run += n;
    }
    counts[e] = run;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t run = 0;
    for (int64_t e = 0; e < E; ++e) {
      offsets[e] = run;
      run += counts[e];
    }
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
    for (int64_t c = 0; c < chunks; ++c) chunk_counts[c * E + e] += int32_t(offsets[e]);
}

// Pass 3 (one warp per chunk): rows in element order from the chunk's per-expert bases.
__global__ void chunk_rank_kernel(const int32_t* idx, int64_t total, int64_t E,
                                  const int32_t* chunk_bases, int32_t* row) {
  extern __shared__ int32_t base[];
  for (int64_t e = threadIdx.x; e < E; e += 32) base[e] = chunk_bases[blockIdx.x * E + e];
  __syncwarp();
  const int lane = threadIdx.x;
  const unsigned lower = (1u << lane) - 1u;
  const int64_t lo = int64_t(blockIdx.x) * kChunk, hi = min(total, lo + kChunk);
  for (int64_t i0 = lo; i0 < hi; i0 += 32) {
    const int64_t i = i0 + lane;
    const int32_t e = i < hi ? idx[i] : -1;
    const bool routed = e >= 0 && e < E;
    const unsigned peers = __match_any_sync(0xffffffffu, routed ? e : -1);
    int32_t r = -1;
    if (routed) r = base[e] + __popc(peers & lower);
    __syncwarp();
    if (routed && (peers & lower) == 0) base[e] += __popc(peers);  // the group's first lane
    __syncwarp();
    if (i < hi) row[i] = r;
  }
}

__global__ void permute_kernel(const float* x, const int32_t* row, float* out, int64_t k, int64_t dim) {
  const int64_t ts = blockIdx.x;
  const int32_t r = row[ts];
  if (r < 0) return;
  const float* src = x + (ts / k) * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) out[int64_t(r) * dim + j] = src[j];
}
__global__ void permute_backward_kernel(const float* dout_perm, const int32_t* row, float* dx,
                                        int64_t k, int64_t dim) {
  const int64_t t = blockIdx.x;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    float acc = 0.f;
    for (int64_t s = 0; s < k; ++s) {
      const int32_t r = row[t * k + s];
      if (r >= 0) acc += dout_perm[int64_t(r) * dim + j];
    }
    dx[t * dim + j] = acc;
  }
}
__global__ void unpermute_kernel(const float* y, const int32_t* row, const float* weights, float* out,
                                 int64_t k, int64_t dim) {
  const int64_t t = blockIdx.x;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    float acc = 0.f;
    for (int64_t s = 0; s < k; ++s) {
      const int32_t r = row[t * k + s];
      if (r >= 0) acc += weights[t * k + s] * y[int64_t(r) * dim + j];
    }
    out[t * dim + j] = acc;
  }
}
__global__ void unpermute_backward_kernel(const float* dout, const float* y, const int32_t* row,
                                          const float* weights, float* dy, float* dweights, int64_t k,
                                          int64_t dim) {
  const int64_t ts = blockIdx.x, t = ts / k;
  const int32_t r = row[ts];
  if (r < 0) {
    if (threadIdx.x == 0) dweights[ts] = 0.f;
    return;
  }
  const float w = weights[ts];
  const float* d = dout + t * dim;
  const float* yr = y + int64_t(r) * dim;
  float* dyr = dy + int64_t(r) * dim;
  double acc = 0.0;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    dyr[j] = w * d[j];
    acc += double(d[j]) * yr[j];
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) dweights[ts] = float(acc);
}
}  // namespace

void CudaBackend::router_forward(const float* logits, float* probs, int32_t* idx, float* weights,
                                 float* lse, int64_t N, int64_t E, int64_t k, bool renormalize) {
  require(E > 0 && k >= 1 && k <= E, "router_forward: need 1 <= k <= E (k={}, E={})", k, E);
  if (N <= 0) return;
  router_forward_kernel<<<blocks_for(N, 128), 128, 0, stream_>>>(logits, probs, idx, weights, lse, N,
                                                                  E, k, renormalize);
  check_launch("router_forward", {N, E, k});
}

void CudaBackend::router_backward(const float* dweights, const float* dprobs, const float* dlse,
                                  const float* probs, const int32_t* idx, const float* weights,
                                  float* dlogits, int64_t N, int64_t E, int64_t k,
                                  bool renormalize) {
  require(E > 0 && k >= 1 && k <= E, "router_backward: need 1 <= k <= E (k={}, E={})", k, E);
  if (N <= 0) return;
  router_backward_kernel<<<blocks_for(N, 128), 128, 0, stream_>>>(
      dweights, dprobs, dlse, probs, idx, weights, dlogits, N, E, k, renormalize);
  check_launch("router_backward", {N, E, k});
}

void CudaBackend::moe_permute_indices(const int32_t* idx, int64_t N, int64_t k, int64_t E,
                                      int64_t* counts, int32_t* row) {
  require(E > 0 && E <= kMaxExperts, "moe_permute_indices: {} experts (the CUDA kernel takes 1..{})",
        E, kMaxExperts);
  const int64_t total = N * k;
  const int64_t chunks = std::max<int64_t>(1, (total + kChunk - 1) / kChunk);
  // scratch: [chunks][E] int32 bases, E int64 offsets, one int32 error flag
  const size_t base_bytes = sizeof(int32_t) * chunks * E;
  char* s = static_cast<char*>(scratch(base_bytes + sizeof(int64_t) * E + 16));
  auto* chunk_counts = reinterpret_cast<int32_t*>(s);
  auto* offsets = reinterpret_cast<int64_t*>(s + (base_bytes + 7) / 8 * 8);
  auto* bad = reinterpret_cast<int32_t*>(offsets + E);
  CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int32_t), stream_));
  const size_t smem = sizeof(int32_t) * E;
  chunk_count_kernel<<<unsigned(chunks), 256, smem, stream_>>>(idx, total, E, chunk_counts, bad);
  check_launch("moe_permute_indices (count)", {N, k, E});
  chunk_scan_kernel<<<1, 1024, 0, stream_>>>(chunk_counts, chunks, E, counts, offsets);
  check_launch("moe_permute_indices (scan)", {N, k, E});
  if (total > 0) {
    chunk_rank_kernel<<<unsigned(chunks), 32, smem, stream_>>>(idx, total, E, chunk_counts, row);
    check_launch("moe_permute_indices (rank)", {N, k, E});
  }
  // The caller reads the counts on the host next anyway; the wait lets a bad index fail here.
  int32_t flag = 0;
  CUDA_CHECK(cudaMemcpyAsync(&flag, bad, sizeof(flag), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  require(flag == 0, "moe_permute_indices: an expert index is out of range [0, {}) (N={}, k={})", E,
        N, k);
}

void CudaBackend::moe_permute(const float* x, const int32_t* row, float* out, int64_t N, int64_t k,
                              int64_t dim) {
  if (N * k <= 0) return;
  permute_kernel<<<unsigned(N * k), 128, 0, stream_>>>(x, row, out, k, dim);
  check_launch("moe_permute", {N, k, dim});
}
void CudaBackend::moe_permute_backward(const float* dout_perm, const int32_t* row, float* dx,
                                       int64_t N, int64_t k, int64_t dim) {
  if (N <= 0) return;
  permute_backward_kernel<<<unsigned(N), 128, 0, stream_>>>(dout_perm, row, dx, k, dim);
  check_launch("moe_permute_backward", {N, k, dim});
}
void CudaBackend::moe_unpermute(const float* y, const int32_t* row, const float* weights,
                                float* out, int64_t N, int64_t k, int64_t dim) {
  if (N <= 0) return;
  unpermute_kernel<<<unsigned(N), 128, 0, stream_>>>(y, row, weights, out, k, dim);
  check_launch("moe_unpermute", {N, k, dim});
}
void CudaBackend::moe_unpermute_backward(const float* dout, const float* y, const int32_t* row,
                                         const float* weights, float* dy, float* dweights,
                                         int64_t N, int64_t k, int64_t dim) {
  if (N * k <= 0) return;
  unpermute_backward_kernel<<<unsigned(N * k), 128, 0, stream_>>>(dout, y, row, weights, dy,
                                                                   dweights, k, dim);
  check_launch("moe_unpermute_backward", {N, k, dim});
}

}  // namespace origami::cuda
