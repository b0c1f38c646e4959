// defines: ORIGAMI_HD, kernel_math:: per-element functions both backends run
// The per-element bodies of the ops, written once: a CPU loop (cpu_*.cpp) and a CUDA thread
// (cuda_*.cu) call the same inline function, so the reference and the kernel cannot drift
// apart. Only scalar math here (no loops over rows, no memory layout, no allocation); what is
// accumulated in fp64 and what is rounded to fp32 is decided in these functions.
#pragma once
#include <cmath>
#include <cstdint>

#include "backend/backend.h"

// __host__ __device__ under nvcc, nothing for the host compiler.
#ifdef __CUDACC__
#define ORIGAMI_HD __host__ __device__
#else
#define ORIGAMI_HD
#endif

namespace origami::kernel_math {

// ---- softmax cross-entropy --------------------------------------------------------------------

// The targets Backend::cross_entropy_* accept over a vocabulary (shard) of V: a token id in
// [0, V), -1 (ignored row) or Backend::kTargetInOtherShard. The caller checks (the model, where
// it builds the targets); the CPU backend checks again, a device backend does not wait to.
ORIGAMI_HD inline bool valid_target(int32_t t, int64_t V) {
  return (t >= 0 && t < V) || t == -1 || t == Backend::kTargetInOtherShard;
}

// ---- elementwise activations ------------------------------------------------------------------

ORIGAMI_HD inline float sigmoid(float x) { return 1.f / (1.f + ::expf(-x)); }
// SwiGLU of one (gate, up) pair: silu(g) * u.
ORIGAMI_HD inline float swiglu(float g, float u) { return g * sigmoid(g) * u; }
// Its gradients from d = dL/dout: d silu(g)/dg = s + g s (1 - s), s = sigmoid(g).
ORIGAMI_HD inline void swiglu_grad(float g, float u, float d, float& dg, float& du) {
  const float s = sigmoid(g);
  dg = d * u * (s + g * s * (1.f - s));
  du = d * g * s;
}

// ---- rotary embedding ----------------------------------------------------------------------------

// theta^(-2i/head_dim) for pair i, in double: pos * inv_freq in fp32 loses ~1e-4 rad at pos 4k.
ORIGAMI_HD inline double rope_inv_freq(int64_t i, int64_t head_dim, float theta) {
  return ::pow(double(theta), -2.0 * double(i) / double(head_dim));
}
// The angle of a pair at position pos; sign = -1 rotates back (the backward).
ORIGAMI_HD inline double rope_angle(int32_t pos, double inv_freq, double sign) {
  return sign * double(pos) * inv_freq;
}
// Rotates the pair (a, b) = (x[i], x[i + head_dim/2]) by the angle with cosine cs and sine sn.
ORIGAMI_HD inline void rope_rotate(float& a, float& b, float cs, float sn) {
  const float x = a, y = b;
  a = x * cs - y * sn;
  b = x * sn + y * cs;
}

// ---- router (Backend::router_forward / router_backward), one token's row ------------------------

// p [E] = softmax(z) with an fp64 sum; returns lse = logsumexp(z).
ORIGAMI_HD inline float softmax_row(const float* z, float* p, int64_t E) {
  float mx = z[0];
  for (int64_t e = 1; e < E; ++e) mx = z[e] > mx ? z[e] : mx;
  double denom = 0.0;
  for (int64_t e = 0; e < E; ++e) denom += ::exp(double(z[e] - mx));
  for (int64_t e = 0; e < E; ++e) p[e] = float(::exp(double(z[e] - mx)) / denom);
  return float(double(mx) + ::log(denom));
}
// The selection order: expert a before b if its probability is higher, ties to the lower index.
ORIGAMI_HD inline bool ranks_before(const float* p, int64_t a, int64_t b) {
  return p[a] > p[b] || (p[a] == p[b] && a < b);
}
// idx [k] = the first k experts in that order: pass s takes the best expert ranked after pass
// s-1's (O(k E), no scratch). Only NaN scores (no order) can leave a pass empty; it then
// repeats the previous expert, so indices stay in range.
ORIGAMI_HD inline void topk_select(const float* p, int64_t E, int64_t k, int32_t* idx) {
  for (int64_t s = 0; s < k; ++s) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e) {
      if (s > 0 && !ranks_before(p, idx[s - 1], e)) continue;
      if (best < 0 || ranks_before(p, e, best)) best = e;
    }
    idx[s] = best < 0 ? idx[s - 1] : int32_t(best);
  }
}
// One token: probabilities, top-k and gate weights (the selected probabilities, divided by their
// fp64 sum if renormalize); returns lse.
ORIGAMI_HD inline float router_forward_row(const float* z, int64_t E, int64_t k, bool renormalize,
                                           float* p, int32_t* idx, float* weights) {
  const float lse = softmax_row(z, p, E);
  topk_select(p, E, k, idx);
  double selected = 0.0;
  for (int64_t s = 0; s < k; ++s) selected += p[idx[s]];
  for (int64_t s = 0; s < k; ++s)
    weights[s] = renormalize ? float(p[idx[s]] / selected) : p[idx[s]];
  return lse;
}
// g_e = dL/dp_e of one token: the balance-loss term dprobs[e] (dprobs may be null) plus the
// selected slots' terms. With renormalisation, w_s = p_s / S, S = sum_r p_r, so
// dL/dp_s = (dw_s - sum_r dw_r w_r) / S; dropped slots (idx -1) have none.
ORIGAMI_HD inline double router_prob_grad(int64_t e, const float* dprobs, const int32_t* idx,
                                          const float* dw, int64_t k, bool renormalize, double S,
                                          double dw_dot_w) {
  double g = dprobs ? double(dprobs[e]) : 0.0;
  for (int64_t s = 0; s < k; ++s)
    if (idx[s] == e) g += renormalize ? (double(dw[s]) - dw_dot_w) / S : double(dw[s]);
  return g;
}
// dz [E] (overwritten) of one token from its p, idx, weights, dweights dw, dprobs (row or null)
// and dlse: softmax dz_e = p_e (g_e - sum_i p_i g_i), logsumexp dz_e += dlse * p_e.
ORIGAMI_HD inline void router_backward_row(const float* p, const int32_t* idx, const float* weights,
                                           const float* dw, const float* dprobs, double dlse,
                                           int64_t E, int64_t k, bool renormalize, float* dz) {
  double S = 0.0, dw_dot_w = 0.0;
  if (renormalize) {
    for (int64_t s = 0; s < k; ++s) {
      if (idx[s] < 0) continue;
      S += p[idx[s]];
      dw_dot_w += double(dw[s]) * weights[s];
    }
  }
  double pg = 0.0;
  for (int64_t e = 0; e < E; ++e)
    pg += double(p[e]) * router_prob_grad(e, dprobs, idx, dw, k, renormalize, S, dw_dot_w);
  for (int64_t e = 0; e < E; ++e) {
    const double g = router_prob_grad(e, dprobs, idx, dw, k, renormalize, S, dw_dot_w);
    dz[e] = float(double(p[e]) * (g - pg + dlse));
  }
}

// ---- router auxiliary losses (Backend::expert_counts_per_block, balance_loss, router_z_loss) ----

// block(t): row_block[t] when given, else t / rows_per_block (rows_per_block = N / B).
ORIGAMI_HD inline int64_t block_of_row(const int32_t* row_block, int64_t t,
                                       int64_t rows_per_block) {
  return row_block ? int64_t(row_block[t]) : t / rows_per_block;
}
// d_b: the block's routed slots (at least 1, so an empty block's f stays 0) or the fixed slots.
ORIGAMI_HD inline double balance_denominator(int64_t routed, bool routed_share, double slots) {
  return routed_share ? double(routed < 1 ? int64_t(1) : routed) : slots;
}
// f[b,i] = counts[b,i] / d_b
ORIGAMI_HD inline double balance_fraction(int64_t count, double denominator) {
  return double(count) / denominator;
}
// dprobs[t,i] = grad_scale * scale * f[block(t), i] / n (in this order: the model's original
// formula, so micro_batch results stayed bit-identical when the loss moved to the backend)
ORIGAMI_HD inline float balance_grad(float grad_scale, double scale, double f, double n) {
  return float(double(grad_scale) * scale * f / n);
}
// One (block, expert) term of the balance loss before the outer scale: f * P / n.
ORIGAMI_HD inline double balance_term(double f, double column_sum, double n) {
  return f * column_sum / n;
}
// dlse[t] = grad_scale * 2 * lse[t] / N
ORIGAMI_HD inline float z_loss_grad(float lse, float grad_scale, int64_t N) {
  return float(double(grad_scale) * 2.0 * double(lse) / double(N));
}


// ---- AdamW (decoupled weight decay) -----------------------------------------------------------

// One call's constants; the bias corrections 1 / (1 - beta^t) are taken in double (in fp32,
// 1 - beta^t loses digits) and rounded once.
struct AdamwStep {
  float lr, beta1, beta2, eps, weight_decay;
  float c1, c2;  // 1 / (1 - beta1^t), 1 / (1 - beta2^t)
};
inline AdamwStep adamw_step(float lr, float beta1, float beta2, float eps, float weight_decay,
                            int64_t t) {
  return {lr, beta1, beta2, eps, weight_decay,
          float(1.0 / (1.0 - std::pow(double(beta1), double(t)))),
          float(1.0 / (1.0 - std::pow(double(beta2), double(t))))};
}
// One element's update: moments from the gradient g, then the bias-corrected step and decay.
ORIGAMI_HD inline void adamw_update(float& param, float& m, float& v, float g, const AdamwStep& s) {
  m = s.beta1 * m + (1.f - s.beta1) * g;
  v = s.beta2 * v + (1.f - s.beta2) * g * g;
  const float mhat = m * s.c1, vhat = v * s.c2;
  param -= s.lr * (mhat / (::sqrtf(vhat) + s.eps) + s.weight_decay * param);
}

}  // namespace origami::kernel_math
