// defines: CudaBackend::attention_{forward,backward}[_offset]: causal grouped-query attention,
// flash style (tiled, online softmax, no T x T matrix anywhere; backward recomputes P)
// Layout as the CPU reference: q/out [B,Tq,nh,hd], k/v [B,Tk,nkv,hd], lse [B,nh,Tq]. Query row t
// sits at position q_start + t and attends keys 0 .. q_start + t: the square op is Tq = Tk,
// q_start = 0; context parallelism calls it with a chunk of queries against all the keys, and
// only the tiles at or before each query's position are visited (no padded rows).
// Work split (fp32 on the CUDA cores, one warp per row at a time):
//   forward / dq: a block owns 16 query rows of one (batch, head), 4 per warp; key/value tiles of
//     32 rows are staged in shared memory; lane j scores key j of the tile (a full dot product,
//     no shuffles), and the warp folds the tile into the row's running max, sum and output,
//     where lane l owns output dims l, l+32, ...
//   dk/dv: the mirror image: a block owns 16 key rows of one kv head, walks the query tiles at or
//     after them for every query head of its group, lane i takes query i of the tile.
// Each gradient element has exactly one owner, so there are no atomics and results are
// run-to-run identical. Shared-memory rows that lanes read across are padded by one float so the
// 32 lanes hit 32 different banks.
#include <cmath>

#include "backend/cuda/cuda_attention_shape.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_launch.h"

namespace origami::cuda {

// The tensor-core kernels (cuda_attention_tc.cu), used below fp32 GEMM precision.
bool attention_tc_supported(int64_t hd);
size_t attention_tc_workspace(int64_t B, int64_t Tq, int64_t Tk, int64_t nh, int64_t nkv,
                              int64_t hd);
void attention_forward_tc(const float* q, const float* k, const float* v, float* out, float* lse,
                          int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh,
                          int64_t nkv, int64_t hd, void* ws, cudaStream_t s);
void attention_backward_tc(const float* dout, const float* q, const float* k, const float* v,
                           const float* lse, const float* D, float* dq, float* dk, float* dv,
                           int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh,
                           int64_t nkv, int64_t hd, void* ws, cudaStream_t s);

namespace {
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kBlockRows = kWarps * kRowsPerWarp;  // 16 rows owned per block
constexpr int kTile = 32;                           // rows staged per tile (one per lane)
constexpr int kMaxHeadDim = 256;

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

using Shape = AttentionShape;

// Copies `rows` rows of hd floats (global row r at src + r*stride) into smem rows of `pitch`,
// zero-filling rows past `valid`.
__device__ void stage(float* dst, int pitch, const float* src, int64_t stride, int rows, int valid,
                      int hd) {
  for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
    const int r = i / hd, d = i % hd;
    dst[r * pitch + d] = r < valid ? src[r * stride + d] : 0.f;
  }
}

template <int DCH>
__global__ void __launch_bounds__(kWarps * 32) attn_fwd_kernel(const float* q, const float* k,
                                                               const float* v, float* out,
                                                               float* lse, Shape s, float scale) {
  extern __shared__ float smem[];
  const int hd = int(s.hd), kp = hd + 1;
  float* Ks = smem;                 // [kTile][hd+1]
  float* Vs = Ks + kTile * kp;      // [kTile][hd]
  float* Qs = Vs + kTile * hd;      // [kBlockRows][hd]
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kBlockRows;
  const int64_t g = h / (s.nh / s.nkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int q_valid = int(imin(kBlockRows, s.Tq - q0));
  stage(Qs, hd, q + s.qi(b, q0, h), s.nh * s.hd, kBlockRows, q_valid, hd);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DCH];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY, l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < DCH; ++c) acc[i][c] = 0.f;
  }
  const int64_t last = s.last_key(q0, kBlockRows);  // causal: keys <= the last row's position
  for (int64_t k0 = 0; k0 <= last; k0 += kTile) {
    const int kv_valid = int(imin(kTile, s.Tk - k0));
    __syncthreads();  // previous tile fully consumed
    stage(Ks, kp, k + s.ki(b, k0, g), s.nkv * s.hd, kTile, kv_valid, hd);
    stage(Vs, hd, v + s.ki(b, k0, g), s.nkv * s.hd, kTile, kv_valid, hd);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int row = warp * kRowsPerWarp + i;
      const int64_t t = q0 + row, pos = s.q_start + t;
      if (t >= s.Tq || k0 > pos) continue;  // warp-uniform
      const int64_t key = k0 + lane;
      const bool valid = key <= pos;
      float sc = -INFINITY;
      if (valid) {
        float dot = 0.f;
        const float* qr = Qs + row * hd;
        const float* kr = Ks + lane * kp;
        for (int d = 0; d < hd; ++d) dot += qr[d] * kr[d];
        sc = dot * scale;
      }
      const float m_new = fmaxf(m[i], warp_max(sc));
      const float p = valid ? expf(sc - m_new) : 0.f;
      const float corr = expf(m[i] - m_new);  // 0 on the first tile (m = -inf)
      l[i] = l[i] * corr + warp_sum(p);
#pragma unroll
      for (int c = 0; c < DCH; ++c) acc[i][c] *= corr;
      for (int j = 0; j < kTile; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int c = 0; c < DCH; ++c) {
          const int d = lane + 32 * c;
          if (d < hd) acc[i][c] += pj * Vs[j * hd + d];
        }
      }
      m[i] = m_new;
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t t = q0 + warp * kRowsPerWarp + i;
    if (t >= s.Tq) continue;
    float* o = out + s.qi(b, t, h);
    const float inv = 1.f / l[i];
#pragma unroll
    for (int c = 0; c < DCH; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) o[d] = acc[i][c] * inv;
    }
    if (lane == 0) lse[s.li(b, h, t)] = m[i] + logf(l[i]);
  }
}

// D[b,h,t] = <dout, out> for the query row: one warp per row.
__global__ void attn_delta_kernel(const float* dout, const float* out, float* D, Shape s) {
  const int64_t rows = s.B * s.nh * s.Tq;
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int64_t t = r % s.Tq, h = (r / s.Tq) % s.nh, b = r / (s.Tq * s.nh);
  const float *o = out + s.qi(b, t, h), *d = dout + s.qi(b, t, h);
  float acc = 0.f;
  for (int64_t j = lane; j < s.hd; j += 32) acc += o[j] * d[j];
  acc = warp_sum(acc);
  if (lane == 0) D[s.li(b, h, t)] = acc;
}

template <int DCH>
__global__ void __launch_bounds__(kWarps * 32) attn_dq_kernel(const float* dout, const float* q,
                                                              const float* k, const float* v,
                                                              const float* lse, const float* D,
                                                              float* dq, Shape s, float scale) {
  extern __shared__ float smem[];
  const int hd = int(s.hd), kp = hd + 1;
  float* Ks = smem;                  // [kTile][hd+1]
  float* Vs = Ks + kTile * kp;       // [kTile][hd+1]
  float* Qs = Vs + kTile * kp;       // [kBlockRows][hd]
  float* dOs = Qs + kBlockRows * hd;  // [kBlockRows][hd]
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kBlockRows;
  const int64_t g = h / (s.nh / s.nkv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int q_valid = int(imin(kBlockRows, s.Tq - q0));
  stage(Qs, hd, q + s.qi(b, q0, h), s.nh * s.hd, kBlockRows, q_valid, hd);
  stage(dOs, hd, dout + s.qi(b, q0, h), s.nh * s.hd, kBlockRows, q_valid, hd);
  float acc[kRowsPerWarp][DCH], row_lse[kRowsPerWarp], row_D[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t t = q0 + warp * kRowsPerWarp + i;
    row_lse[i] = t < s.Tq ? lse[s.li(b, h, t)] : 0.f;
    row_D[i] = t < s.Tq ? D[s.li(b, h, t)] : 0.f;
#pragma unroll
    for (int c = 0; c < DCH; ++c) acc[i][c] = 0.f;
  }
  const int64_t last = s.last_key(q0, kBlockRows);
  for (int64_t k0 = 0; k0 <= last; k0 += kTile) {
    const int kv_valid = int(imin(kTile, s.Tk - k0));
    __syncthreads();
    stage(Ks, kp, k + s.ki(b, k0, g), s.nkv * s.hd, kTile, kv_valid, hd);
    stage(Vs, kp, v + s.ki(b, k0, g), s.nkv * s.hd, kTile, kv_valid, hd);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int row = warp * kRowsPerWarp + i;
      const int64_t t = q0 + row, pos = s.q_start + t;
      if (t >= s.Tq || k0 > pos) continue;
      const bool valid = k0 + lane <= pos;
      float ds = 0.f;
      if (valid) {
        float qk = 0.f, dp = 0.f;
        const float *qr = Qs + row * hd, *dr = dOs + row * hd;
        const float *kr = Ks + lane * kp, *vr = Vs + lane * kp;
        for (int d = 0; d < hd; ++d) {
          qk += qr[d] * kr[d];
          dp += dr[d] * vr[d];
        }
        const float p = expf(qk * scale - row_lse[i]);
        ds = p * (dp - row_D[i]);
      }
      for (int j = 0; j < kTile; ++j) {
        const float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int c = 0; c < DCH; ++c) {
          const int d = lane + 32 * c;
          if (d < hd) acc[i][c] += dsj * Ks[j * kp + d];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t t = q0 + warp * kRowsPerWarp + i;
    if (t >= s.Tq) continue;
    float* o = dq + s.qi(b, t, h);
#pragma unroll
    for (int c = 0; c < DCH; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) o[d] = acc[i][c] * scale;
    }
  }
}

template <int DCH>
__global__ void __launch_bounds__(kWarps * 32) attn_dkdv_kernel(const float* dout, const float* q,
                                                                const float* k, const float* v,
                                                                const float* lse, const float* D,
                                                                float* dk, float* dv, Shape s,
                                                                float scale) {
  extern __shared__ float smem[];
  const int hd = int(s.hd), qp = hd + 1;
  float* Qs = smem;                    // [kTile][hd+1]
  float* dOs = Qs + kTile * qp;        // [kTile][hd+1]
  float* Kr = dOs + kTile * qp;        // [kBlockRows][hd]
  float* Vr = Kr + kBlockRows * hd;    // [kBlockRows][hd]
  float* Ls = Vr + kBlockRows * hd;    // [kTile]
  float* Ds = Ls + kTile;              // [kTile]
  const int64_t b = blockIdx.z, g = blockIdx.y, j0 = int64_t(blockIdx.x) * kBlockRows;
  const int64_t group = s.nh / s.nkv;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int k_valid = int(imin(kBlockRows, s.Tk - j0));
  stage(Kr, hd, k + s.ki(b, j0, g), s.nkv * s.hd, kBlockRows, k_valid, hd);
  stage(Vr, hd, v + s.ki(b, j0, g), s.nkv * s.hd, kBlockRows, k_valid, hd);
  float adk[kRowsPerWarp][DCH], adv[kRowsPerWarp][DCH];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
    for (int c = 0; c < DCH; ++c) adk[i][c] = 0.f, adv[i][c] = 0.f;
  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = g * group + hh;
    // The query tiles holding a position >= j0 (keys past the last query's position get none,
    // and their zero gradient is still written below).
    const int64_t first = j0 > s.q_start ? j0 - s.q_start : 0;
    for (int64_t t0 = (first / kTile) * kTile; t0 < s.Tq; t0 += kTile) {
      const int q_valid = int(imin(kTile, s.Tq - t0));
      __syncthreads();
      stage(Qs, qp, q + s.qi(b, t0, h), s.nh * s.hd, kTile, q_valid, hd);
      stage(dOs, qp, dout + s.qi(b, t0, h), s.nh * s.hd, kTile, q_valid, hd);
      if (threadIdx.x < kTile) {
        const bool ok = int(threadIdx.x) < q_valid;
        Ls[threadIdx.x] = ok ? lse[s.li(b, h, t0 + threadIdx.x)] : 0.f;
        Ds[threadIdx.x] = ok ? D[s.li(b, h, t0 + threadIdx.x)] : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int row = warp * kRowsPerWarp + i;
        const int64_t j = j0 + row;
        if (j >= s.Tk || s.q_start + t0 + kTile - 1 < j) continue;  // no query here sees key j
        const int64_t t = t0 + lane;
        const bool valid = s.q_start + t >= j && t < s.Tq;
        float p = 0.f, ds = 0.f;
        if (valid) {
          float qk = 0.f, dp = 0.f;
          const float *qr = Qs + lane * qp, *dr = dOs + lane * qp;
          const float *kr = Kr + row * hd, *vr = Vr + row * hd;
          for (int d = 0; d < hd; ++d) {
            qk += qr[d] * kr[d];
            dp += dr[d] * vr[d];
          }
          p = expf(qk * scale - Ls[lane]);
          ds = p * (dp - Ds[lane]);
        }
        for (int x = 0; x < kTile; ++x) {
          const float px = __shfl_sync(0xffffffffu, p, x);
          const float dsx = __shfl_sync(0xffffffffu, ds, x);
#pragma unroll
          for (int c = 0; c < DCH; ++c) {
            const int d = lane + 32 * c;
            if (d < hd) {
              adv[i][c] += px * dOs[x * qp + d];
              adk[i][c] += dsx * Qs[x * qp + d];
            }
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t j = j0 + warp * kRowsPerWarp + i;
    if (j >= s.Tk) continue;
#pragma unroll
    for (int c = 0; c < DCH; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) {
        dk[s.ki(b, j, g) + d] = adk[i][c] * scale;
        dv[s.ki(b, j, g) + d] = adv[i][c];
      }
    }
  }
}

void check_shape(const Shape& s, const char* op) {
  require(s.B >= 0 && s.Tq >= 0 && s.nh > 0 && s.nkv > 0 && s.hd > 0,
        "{}: invalid shape B={} Tq={} nh={} nkv={} hd={}", op, s.B, s.Tq, s.nh, s.nkv, s.hd);
  require(s.q_start >= 0 && s.q_start + s.Tq <= s.Tk,
        "{}: queries at positions [{}, {}) need keys up to there, but Tk = {}", op, s.q_start,
        s.q_start + s.Tq, s.Tk);
  require(s.nh % s.nkv == 0,
        "{}: query heads ({}) must be a multiple of kv heads ({}) for grouped-query attention", op,
        s.nh, s.nkv);
  require(s.hd <= kMaxHeadDim, "{}: head_dim {} exceeds the CUDA kernel's limit of {}", op, s.hd,
        kMaxHeadDim);
}

// Calls f(std::integral_constant<int, DCH>) with DCH the smallest of 1, 2, 4, 8 covering hd/32.
template <typename F>
void with_chunks(int64_t hd, F f) {
  const int64_t need = (hd + 31) / 32;
  if (need <= 1) f(std::integral_constant<int, 1>{});
  else if (need <= 2) f(std::integral_constant<int, 2>{});
  else if (need <= 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}
}  // namespace

void CudaBackend::attention_forward(const float* q, const float* k, const float* v, float* out,
                                    float* lse, int64_t B, int64_t T, int64_t nh, int64_t nkv,
                                    int64_t hd) {
  attention_forward_offset(q, k, v, out, lse, B, T, T, 0, nh, nkv, hd);
}

void CudaBackend::attention_backward(const float* dout, const float* q, const float* k,
                                     const float* v, const float* out, const float* lse,
                                     float* dq, float* dk, float* dv, int64_t B, int64_t T,
                                     int64_t nh, int64_t nkv, int64_t hd) {
  attention_backward_offset(dout, q, k, v, out, lse, dq, dk, dv, B, T, T, 0, nh, nkv, hd);
}

void CudaBackend::attention_forward_offset(const float* q, const float* k, const float* v,
                                           float* out, float* lse, int64_t B, int64_t Tq,
                                           int64_t Tk, int64_t q_start, int64_t nh, int64_t nkv,
                                           int64_t hd) {
  const Shape s{B, Tq, Tk, q_start, nh, nkv, hd};
  check_shape(s, "attention_forward");
  if (B == 0 || Tq == 0) return;
  if (precision_ != GemmPrecision::fp32 && attention_tc_supported(hd)) {
    attention_forward_tc(q, k, v, out, lse, B, Tq, Tk, q_start, nh, nkv, hd,
                         scratch(attention_tc_workspace(B, Tq, Tk, nh, nkv, hd)), stream_);
    return;
  }
  const float scale = 1.f / std::sqrt(float(hd));
  const size_t smem = sizeof(float) * (kTile * (hd + 1) + kTile * hd + kBlockRows * hd);
  const dim3 grid(unsigned((Tq + kBlockRows - 1) / kBlockRows), unsigned(nh), unsigned(B));
  with_chunks(hd, [&](auto c) {
    constexpr int DCH = decltype(c)::value;
    allow_smem(attn_fwd_kernel<DCH>, smem);
    attn_fwd_kernel<DCH><<<grid, kWarps * 32, smem, stream_>>>(q, k, v, out, lse, s, scale);
  });
  check_launch("attention_forward", {B, Tq, Tk, q_start, nh, nkv, hd});
}

void CudaBackend::attention_backward_offset(const float* dout, const float* q, const float* k,
                                            const float* v, const float* out, const float* lse,
                                            float* dq, float* dk, float* dv, int64_t B,
                                            int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh,
                                            int64_t nkv, int64_t hd) {
  const Shape s{B, Tq, Tk, q_start, nh, nkv, hd};
  check_shape(s, "attention_backward");
  if (B == 0 || Tk == 0) return;
  const float scale = 1.f / std::sqrt(float(hd));
  const bool tc = precision_ != GemmPrecision::fp32 && attention_tc_supported(hd);
  const size_t d_bytes = (sizeof(float) * B * nh * std::max<int64_t>(Tq, 1) + 255) / 256 * 256;
  char* ws = static_cast<char*>(
      scratch(d_bytes + (tc ? attention_tc_workspace(B, Tq, Tk, nh, nkv, hd) : 0)));
  auto* D = reinterpret_cast<float*>(ws);
  if (Tq > 0) {
    attn_delta_kernel<<<blocks_for(B * nh * Tq * 32, 256), 256, 0, stream_>>>(dout, out, D, s);
    check_launch("attention_backward (delta)", {B, Tq, nh, hd});
  }
  if (tc) {
    attention_backward_tc(dout, q, k, v, lse, D, dq, dk, dv, B, Tq, Tk, q_start, nh, nkv, hd,
                          ws + d_bytes, stream_);
    return;
  }
  const size_t smem_dq = sizeof(float) * (2 * kTile * (hd + 1) + 2 * kBlockRows * hd);
  const size_t smem_dkv = sizeof(float) * (2 * kTile * (hd + 1) + 2 * kBlockRows * hd + 2 * kTile);
  const unsigned q_blocks = unsigned((Tq + kBlockRows - 1) / kBlockRows);
  const unsigned k_blocks = unsigned((Tk + kBlockRows - 1) / kBlockRows);
  with_chunks(hd, [&](auto c) {
    constexpr int DCH = decltype(c)::value;
    if (q_blocks > 0) {
      allow_smem(attn_dq_kernel<DCH>, smem_dq);
      attn_dq_kernel<DCH><<<dim3(q_blocks, unsigned(nh), unsigned(B)), kWarps * 32, smem_dq,
                            stream_>>>(dout, q, k, v, lse, D, dq, s, scale);
      check_launch("attention_backward (dq)", {B, Tq, Tk, q_start, nh, nkv, hd});
    }
    allow_smem(attn_dkdv_kernel<DCH>, smem_dkv);
    attn_dkdv_kernel<DCH><<<dim3(k_blocks, unsigned(nkv), unsigned(B)), kWarps * 32, smem_dkv,
                            stream_>>>(dout, q, k, v, lse, D, dk, dv, s, scale);
    check_launch("attention_backward (dk, dv)", {B, Tq, Tk, q_start, nh, nkv, hd});
  });
}

}  // namespace origami::cuda
