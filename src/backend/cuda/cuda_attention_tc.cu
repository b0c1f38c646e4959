// defines: attention_forward_tc / attention_backward_tc: causal GQA flash attention on the tensor
// cores (bf16 operands, fp32 accumulation), used when GEMMs run below fp32 precision. Queries
// [B,Tq] at positions q_start.. against keys [B,Tk], as in cuda_attention.cu (square: Tq = Tk,
// q_start = 0).
// A block is 4 warps owning 64 rows (queries in forward/dq, keys in dk/dv), 16 per warp, and
// stages the other operand 32 rows at a time. The products go through WMMA 16x16x16
// fragments; softmax, masking and the elementwise steps run on fp32 scores in shared memory.
//   forward: two passes over the key tiles. Pass 1 keeps each row's running max and sum (the
//     log-sum-exp); pass 2 recomputes the scores, forms P = exp(s - lse) exactly once per
//     element and accumulates O = P V in register fragments. One extra Q K^T product buys
//     accumulators that never need rescaling (WMMA's register layout is opaque).
//   dq:    per query tile, for each key tile: S, P, dP = dO V^T, dS = P (dP - D), dQ += dS K.
//   dk/dv: per key tile, for each query head of the group and each later query tile:
//          S^T = K Q^T, P^T, dV += P^T dO, dP^T = V dO^T, dS^T, dK += dS^T Q.
// dq and dk/dv recompute S separately so each gradient has one owner: no atomics, and the
// results are run-to-run identical. The fp32 inputs are rounded to bf16 once per call into a
// workspace, so tiles are staged with 16-byte copies and no conversion in the loops.
#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>

#include "backend/cuda/cuda_attention_shape.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_launch.h"

namespace origami::cuda {

namespace {
using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kRows = 64;     // rows a block owns (queries in forward/dq, keys in dk/dv)
constexpr int kCols = 32;     // rows of the other operand per staged tile (ncu on the H100: the
                              // kernels are latency-bound; 32 halves the tiles' shared memory
                              // and doubles the resident blocks)
constexpr int kWarps = 4;     // 16 rows each
constexpr int kSPitch = kCols + 4;  // fp32 score rows (+4: 16-byte steps, fewer bank conflicts)
constexpr int kPPitch = kCols + 8;  // bf16 probability rows
constexpr int kHalf = kCols / 2;    // score columns per lane (two lanes per row)

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

using Shape = AttentionShape;

__host__ __device__ constexpr int round128(int bytes) { return (bytes + 127) / 128 * 128; }
template <int HD> __host__ __device__ constexpr int tile_bytes(int rows) { return round128(rows * (HD + 8) * 2); }
constexpr int kSBytes = round128(16 * kSPitch * 4);  // per warp
constexpr int kPBytes = round128(16 * kPPitch * 2);  // per warp

// rows [r0, r0+ROWS) of a [T, stride] bf16 tensor (row r at src + r*stride) -> smem rows of
// pitch HD+8, zero past T; 16-byte copies (8 elements) per thread and step.
template <int HD, int ROWS>
__device__ void stage_bf16(bf16* dst, const bf16* src, int64_t stride, int64_t r0, int64_t T) {
  for (int i = threadIdx.x; i < ROWS * HD / 8; i += blockDim.x) {
    const int r = i / (HD / 8), c = (i % (HD / 8)) * 8;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r0 + r < T) v = *reinterpret_cast<const uint4*>(src + (r0 + r) * stride + c);
    *reinterpret_cast<uint4*>(dst + r * (HD + 8) + c) = v;
  }
}

// S[16 x kCols] (fp32, pitch kSPitch) = A[16 x HD] . Bt^T, A rows at a (pitch HD+8), B^T given as
// the kCols rows of bt (pitch HD+8): the product of a row block with a transposed tile.
template <int HD>
__device__ void product_abt(float* S, const bf16* a, const bf16* bt) {
#pragma unroll
  for (int j = 0; j < kCols / 16; ++j) {
    FragC c;
    wmma::fill_fragment(c, 0.f);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      FragA fa;
      FragBT fb;
      wmma::load_matrix_sync(fa, a + kk * 16, HD + 8);
      wmma::load_matrix_sync(fb, bt + j * 16 * (HD + 8) + kk * 16, HD + 8);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(S + j * 16, c, kSPitch, wmma::mem_row_major);
  }
}

// acc[HD/16] += P[16 x kCols] (bf16, pitch kPPitch) . M[kCols x HD] (rows pitch HD+8)
template <int HD>
__device__ void accumulate_pm(FragC (&acc)[HD / 16], const bf16* P, const bf16* M) {
#pragma unroll
  for (int kk = 0; kk < kCols / 16; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, P + kk * 16, kPPitch);
#pragma unroll
    for (int n = 0; n < HD / 16; ++n) {
      FragB fb;
      wmma::load_matrix_sync(fb, M + kk * 16 * (HD + 8) + n * 16, HD + 8);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// Writes 16 rows of acc * mul to global rows [row0, row0+16) (pitch `stride`), rows < T only,
// through a 16x16 fp32 staging patch per fragment.
template <int HD>
__device__ void store_rows(float* dst, int64_t stride, int64_t row0, int64_t T, FragC (&acc)[HD / 16],
                           float mul, float* patch) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) {
    wmma::store_matrix_sync(patch, acc[n], 16, wmma::mem_row_major);
    __syncwarp();
    for (int i = lane; i < 256; i += 32) {
      const int r = i / 16, c = i % 16;
      if (row0 + r < T) dst[(row0 + r) * stride + n * 16 + c] = patch[i] * mul;
    }
    __syncwarp();
  }
}

template <int HD>
__global__ void __launch_bounds__(kWarps * 32) fwd_tc_kernel(const bf16* q, const bf16* k,
                                                             const bf16* v, float* out, float* lse,
                                                             Shape s, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int tiles = tile_bytes<HD>(kRows) + 2 * tile_bytes<HD>(kCols);
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = reinterpret_cast<bf16*>(smem + tile_bytes<HD>(kRows));
  bf16* Vs = reinterpret_cast<bf16*>(smem + tile_bytes<HD>(kRows) + tile_bytes<HD>(kCols));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* S = reinterpret_cast<float*>(smem + tiles + warp * kSBytes);
  bf16* P = reinterpret_cast<bf16*>(smem + tiles + kWarps * kSBytes + warp * kPBytes);
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kRows;
  const int64_t g = h / (s.nh / s.nkv);
  stage_bf16<HD, kRows>(Qs, q + s.qi(b, 0, h), s.nh * HD, q0, s.Tq);
  // Softmax bookkeeping: lane pair (2r, 2r+1) owns row r of the warp's 16, columns [kHalf*half, +kHalf).
  const int r = lane >> 1, half = lane & 1;
  const int64_t t = q0 + warp * 16 + r, pos = s.q_start + t;
  float m = -INFINITY, l = 0.f;
  const int64_t last = s.last_key(q0, kRows);
  for (int pass = 0; pass < 2; ++pass) {
    FragC acc[HD / 16];
#pragma unroll
    for (int n = 0; n < HD / 16; ++n) wmma::fill_fragment(acc[n], 0.f);
    const float row_lse = m + logf(l);  // pass 2 only
    for (int64_t k0 = 0; k0 <= last; k0 += kCols) {
      __syncthreads();
      stage_bf16<HD, kCols>(Ks, k + s.ki(b, 0, g), s.nkv * HD, k0, s.Tk);
      if (pass == 1) stage_bf16<HD, kCols>(Vs, v + s.ki(b, 0, g), s.nkv * HD, k0, s.Tk);
      __syncthreads();
      product_abt<HD>(S, Qs + warp * 16 * (HD + 8), Ks);
      __syncwarp();
      if (pass == 0) {
        float mx = -INFINITY;
        for (int c = half * kHalf; c < half * kHalf + kHalf; ++c)
          if (k0 + c <= pos) mx = fmaxf(mx, S[r * kSPitch + c] * scale);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m, mx);
        float sum = 0.f;
        if (m_new > -INFINITY) {
          for (int c = half * kHalf; c < half * kHalf + kHalf; ++c)
            if (k0 + c <= pos) sum += expf(S[r * kSPitch + c] * scale - m_new);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = (m_new > -INFINITY ? l * expf(m - m_new) : 0.f) + sum;
        m = m_new;
      } else {
        for (int c = half * kHalf; c < half * kHalf + kHalf; ++c) {
          const float p = (k0 + c <= pos && t < s.Tq) ? expf(S[r * kSPitch + c] * scale - row_lse) : 0.f;
          P[r * kPPitch + c] = __float2bfloat16(p);
        }
        __syncwarp();
        accumulate_pm<HD>(acc, P, Vs);
      }
    }
    if (pass == 1) {
      __syncwarp();
      store_rows<HD>(out + s.qi(b, 0, h), s.nh * HD, q0 + warp * 16, s.Tq, acc, 1.f, S);
      if (half == 0 && t < s.Tq) lse[s.li(b, h, t)] = row_lse;
    }
  }
}

// dq: per query tile, over the key tiles at or before it.
template <int HD>
__global__ void __launch_bounds__(kWarps * 32) dq_tc_kernel(const bf16* dout, const bf16* q,
                                                            const bf16* k, const bf16* v,
                                                            const float* lse, const float* D,
                                                            float* dq, Shape s, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int tiles = 2 * tile_bytes<HD>(kRows) + 2 * tile_bytes<HD>(kCols);
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* dOs = reinterpret_cast<bf16*>(smem + tile_bytes<HD>(kRows));
  bf16* Ks = reinterpret_cast<bf16*>(smem + 2 * tile_bytes<HD>(kRows));
  bf16* Vs = reinterpret_cast<bf16*>(smem + 2 * tile_bytes<HD>(kRows) + tile_bytes<HD>(kCols));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* S = reinterpret_cast<float*>(smem + tiles + warp * kSBytes);
  bf16* P = reinterpret_cast<bf16*>(smem + tiles + kWarps * kSBytes + warp * kPBytes);
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kRows;
  const int64_t g = h / (s.nh / s.nkv);
  stage_bf16<HD, kRows>(Qs, q + s.qi(b, 0, h), s.nh * HD, q0, s.Tq);
  stage_bf16<HD, kRows>(dOs, dout + s.qi(b, 0, h), s.nh * HD, q0, s.Tq);
  const int r = lane >> 1, half = lane & 1;
  const int64_t t = q0 + warp * 16 + r, pos = s.q_start + t;
  const float row_lse = t < s.Tq ? lse[s.li(b, h, t)] : INFINITY;
  const float row_D = t < s.Tq ? D[s.li(b, h, t)] : 0.f;
  FragC acc[HD / 16];
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) wmma::fill_fragment(acc[n], 0.f);
  const int64_t last = s.last_key(q0, kRows);
  float pr[kHalf];
  for (int64_t k0 = 0; k0 <= last; k0 += kCols) {
    __syncthreads();
    stage_bf16<HD, kCols>(Ks, k + s.ki(b, 0, g), s.nkv * HD, k0, s.Tk);
    stage_bf16<HD, kCols>(Vs, v + s.ki(b, 0, g), s.nkv * HD, k0, s.Tk);
    __syncthreads();
    product_abt<HD>(S, Qs + warp * 16 * (HD + 8), Ks);
    __syncwarp();
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const int c = half * kHalf + i;
      pr[i] = (k0 + c <= pos) ? expf(S[r * kSPitch + c] * scale - row_lse) : 0.f;
    }
    __syncwarp();
    product_abt<HD>(S, dOs + warp * 16 * (HD + 8), Vs);  // dP
    __syncwarp();
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const int c = half * kHalf + i;
      P[r * kPPitch + c] = __float2bfloat16(pr[i] * (S[r * kSPitch + c] - row_D));
    }
    __syncwarp();
    accumulate_pm<HD>(acc, P, Ks);
  }
  __syncwarp();
  store_rows<HD>(dq + s.qi(b, 0, h), s.nh * HD, q0 + warp * 16, s.Tq, acc, scale, S);
}

// dk, dv: per key tile of one kv head, over its group's query heads and the tiles at or after it.
template <int HD>
__global__ void __launch_bounds__(kWarps * 32) dkdv_tc_kernel(const bf16* dout, const bf16* q,
                                                              const bf16* k, const bf16* v,
                                                              const float* lse, const float* D,
                                                              float* dk, float* dv, Shape s,
                                                              float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int tiles = 2 * tile_bytes<HD>(kRows) + 2 * tile_bytes<HD>(kCols);
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = reinterpret_cast<bf16*>(smem + tile_bytes<HD>(kRows));
  bf16* Qs = reinterpret_cast<bf16*>(smem + 2 * tile_bytes<HD>(kRows));
  bf16* dOs = reinterpret_cast<bf16*>(smem + 2 * tile_bytes<HD>(kRows) + tile_bytes<HD>(kCols));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* S = reinterpret_cast<float*>(smem + tiles + warp * kSBytes);
  bf16* P = reinterpret_cast<bf16*>(smem + tiles + kWarps * kSBytes + warp * kPBytes);
  float* Ls = reinterpret_cast<float*>(smem + tiles + kWarps * (kSBytes + kPBytes));
  float* Ds = Ls + kCols;
  const int64_t b = blockIdx.z, g = blockIdx.y, j0 = int64_t(blockIdx.x) * kRows;
  const int64_t group = s.nh / s.nkv;
  stage_bf16<HD, kRows>(Ks, k + s.ki(b, 0, g), s.nkv * HD, j0, s.Tk);
  stage_bf16<HD, kRows>(Vs, v + s.ki(b, 0, g), s.nkv * HD, j0, s.Tk);
  // Lane pair (2r, 2r+1) owns key row r of the warp's 16, query columns [kHalf*half, +kHalf).
  const int r = lane >> 1, half = lane & 1;
  const int64_t key = j0 + warp * 16 + r;
  FragC adk[HD / 16], adv[HD / 16];
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) wmma::fill_fragment(adk[n], 0.f), wmma::fill_fragment(adv[n], 0.f);
  float pr[kHalf];
  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = g * group + hh;
    // From the first query at position >= j0 (none for keys past the last query's position:
    // their zero gradient is still written below).
    for (int64_t t0 = j0 > s.q_start ? j0 - s.q_start : 0; t0 < s.Tq; t0 += kCols) {
      __syncthreads();
      stage_bf16<HD, kCols>(Qs, q + s.qi(b, 0, h), s.nh * HD, t0, s.Tq);
      stage_bf16<HD, kCols>(dOs, dout + s.qi(b, 0, h), s.nh * HD, t0, s.Tq);
      for (int i = threadIdx.x; i < kCols; i += blockDim.x) {
        const bool ok = t0 + i < s.Tq;
        Ls[i] = ok ? lse[s.li(b, h, t0 + i)] : INFINITY;
        Ds[i] = ok ? D[s.li(b, h, t0 + i)] : 0.f;
      }
      __syncthreads();
      product_abt<HD>(S, Ks + warp * 16 * (HD + 8), Qs);  // S^T: [16 keys x kCols queries]
      __syncwarp();
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        const int c = half * kHalf + i;
        const int64_t t = t0 + c;
        pr[i] = (s.q_start + t >= key && key < s.Tk) ? expf(S[r * kSPitch + c] * scale - Ls[c]) : 0.f;
        P[r * kPPitch + c] = __float2bfloat16(pr[i]);
      }
      __syncwarp();
      accumulate_pm<HD>(adv, P, dOs);  // dV += P^T dO
      __syncwarp();
      product_abt<HD>(S, Vs + warp * 16 * (HD + 8), dOs);  // dP^T = V dO^T
      __syncwarp();
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        const int c = half * kHalf + i;
        P[r * kPPitch + c] = __float2bfloat16(pr[i] * (S[r * kSPitch + c] - Ds[c]));
      }
      __syncwarp();
      accumulate_pm<HD>(adk, P, Qs);  // dK += dS^T Q
    }
  }
  __syncwarp();
  store_rows<HD>(dk + s.ki(b, 0, g), s.nkv * HD, j0 + warp * 16, s.Tk, adk, scale, S);
  store_rows<HD>(dv + s.ki(b, 0, g), s.nkv * HD, j0 + warp * 16, s.Tk, adv, 1.f, S);
}

template <typename F>
bool with_head_dim(int64_t hd, F f) {
  switch (hd) {
    case 32: f(std::integral_constant<int, 32>{}); return true;
    case 64: f(std::integral_constant<int, 64>{}); return true;
    case 96: f(std::integral_constant<int, 96>{}); return true;
    case 128: f(std::integral_constant<int, 128>{}); return true;
    default: return false;
  }
}

template <typename Kernel>
void set_smem(Kernel kernel, int bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}
}  // namespace

bool attention_tc_supported(int64_t hd) { return hd == 32 || hd == 64 || hd == 96 || hd == 128; }

size_t attention_tc_workspace(int64_t B, int64_t Tq, int64_t Tk, int64_t nh, int64_t nkv,
                              int64_t hd) {
  return size_t(2) * size_t(B * hd) * size_t(2 * nh * Tq + 2 * nkv * Tk) + 256;
}

// The inputs are rounded to bf16 once here (one pass each) rather than tile by tile in every
// block that stages them: half the bytes per tile and no conversion in the kernels' loops.
void attention_forward_tc(const float* q, const float* k, const float* v, float* out, float* lse,
                          int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh,
                          int64_t nkv, int64_t hd, void* workspace, cudaStream_t stream) {
  const Shape s{B, Tq, Tk, q_start, nh, nkv, hd};
  bf16* q16 = static_cast<bf16*>(workspace);
  bf16* k16 = q16 + B * Tq * nh * hd;
  bf16* v16 = k16 + B * Tk * nkv * hd;
  to_bf16(q, q16, B * Tq * nh * hd, stream);
  to_bf16(k, k16, B * Tk * nkv * hd, stream);
  to_bf16(v, v16, B * Tk * nkv * hd, stream);
  const float scale = 1.f / std::sqrt(float(hd));
  with_head_dim(hd, [&](auto c) {
    constexpr int HD = decltype(c)::value;
    const int smem = tile_bytes<HD>(kRows) + 2 * tile_bytes<HD>(kCols) + kWarps * (kSBytes + kPBytes);
    set_smem(fwd_tc_kernel<HD>, smem);
    fwd_tc_kernel<HD><<<dim3(unsigned((Tq + kRows - 1) / kRows), unsigned(nh), unsigned(B)),
                        kWarps * 32, smem, stream>>>(q16, k16, v16, out, lse, s, scale);
  });
  check_launch("attention_forward (tensor cores)", {B, Tq, Tk, q_start, nh, nkv, hd});
}

void attention_backward_tc(const float* dout, const float* q, const float* k, const float* v,
                           const float* lse, const float* D, float* dq, float* dk, float* dv,
                           int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh,
                           int64_t nkv, int64_t hd, void* workspace, cudaStream_t stream) {
  const Shape s{B, Tq, Tk, q_start, nh, nkv, hd};
  bf16* q16 = static_cast<bf16*>(workspace);
  bf16* k16 = q16 + B * Tq * nh * hd;
  bf16* v16 = k16 + B * Tk * nkv * hd;
  bf16* do16 = v16 + B * Tk * nkv * hd;
  to_bf16(q, q16, B * Tq * nh * hd, stream);
  to_bf16(k, k16, B * Tk * nkv * hd, stream);
  to_bf16(v, v16, B * Tk * nkv * hd, stream);
  to_bf16(dout, do16, B * Tq * nh * hd, stream);
  const float scale = 1.f / std::sqrt(float(hd));
  const unsigned q_tiles = unsigned((Tq + kRows - 1) / kRows);
  const unsigned k_tiles = unsigned((Tk + kRows - 1) / kRows);
  with_head_dim(hd, [&](auto c) {
    constexpr int HD = decltype(c)::value;
    const int smem_dq = 2 * tile_bytes<HD>(kRows) + 2 * tile_bytes<HD>(kCols) + kWarps * (kSBytes + kPBytes);
    if (q_tiles > 0) {
      set_smem(dq_tc_kernel<HD>, smem_dq);
      dq_tc_kernel<HD><<<dim3(q_tiles, unsigned(nh), unsigned(B)), kWarps * 32, smem_dq, stream>>>(
          do16, q16, k16, v16, lse, D, dq, s, scale);
      check_launch("attention_backward (dq, tensor cores)", {B, Tq, Tk, q_start, nh, nkv, hd});
    }
    const int smem_kv = smem_dq + 2 * kCols * 4;
    set_smem(dkdv_tc_kernel<HD>, smem_kv);
    dkdv_tc_kernel<HD><<<dim3(k_tiles, unsigned(nkv), unsigned(B)), kWarps * 32, smem_kv, stream>>>(
        do16, q16, k16, v16, lse, D, dk, dv, s, scale);
    check_launch("attention_backward (dk/dv, tensor cores)", {B, Tq, Tk, q_start, nh, nkv, hd});
  });
}

}  // namespace origami::cuda
