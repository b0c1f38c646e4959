// defines: CpuBackend::attention_forward / attention_backward (causal, grouped-query)
// Flash-attention math without the tiling: forward keeps only the log-sum-exp per query row;
// backward recomputes P = exp(s - lse) where it needs it. Backward runs two passes, dq parallel
// over query rows and dk/dv parallel over key rows (summing the group's heads and the queries in
// a fixed order), so no two threads ever add into the same gradient element.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "base/error.h"

namespace origami {

namespace {

// Queries are positions q0 .. q0+T-1 of sequences whose keys are positions 0 .. Tk-1 (the
// square op: q0 = 0, Tk = T). Query row t sits at position q0 + t and attends keys 0..q0+t.
struct AttnShape {
  int64_t B, T, nh, nkv, hd, Tk, q0;
  int64_t group() const { return nh / nkv; }
  // q/out/dq: [B,T,nh,hd]; k/v/dk/dv: [B,Tk,nkv,hd]; lse: [B,nh,T]
  int64_t qi(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * nh + h) * hd; }
  int64_t ki(int64_t b, int64_t t, int64_t g) const { return ((b * Tk + t) * nkv + g) * hd; }
  int64_t li(int64_t b, int64_t h, int64_t t) const { return (b * nh + h) * T + t; }
};

void check_shape(const AttnShape& s, const char* op) {
  check(s.B >= 0 && s.T >= 0 && s.nh > 0 && s.nkv > 0 && s.hd > 0 && s.q0 >= 0 &&
            s.q0 + s.T <= s.Tk,
        "{}: invalid shape B={} Tq={} Tk={} q_start={} nh={} nkv={} hd={}", op, s.B, s.T, s.Tk,
        s.q0, s.nh, s.nkv, s.hd);
  check(s.nh % s.nkv == 0,
        "{}: query heads ({}) must be a multiple of kv heads ({}) for grouped-query attention", op,
        s.nh, s.nkv);
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void CpuBackend::attention_forward(const float* q, const float* k, const float* v, float* out,
                                   float* lse, int64_t B, int64_t T, int64_t nh, int64_t nkv,
                                   int64_t hd) {
  attention_forward_offset(q, k, v, out, lse, B, T, T, 0, nh, nkv, hd);
}

void CpuBackend::attention_backward(const float* dout, const float* q, const float* k,
                                    const float* v, const float* out, const float* lse,
                                    float* dq, float* dk, float* dv, int64_t B, int64_t T,
                                    int64_t nh, int64_t nkv, int64_t hd) {
  attention_backward_offset(dout, q, k, v, out, lse, dq, dk, dv, B, T, T, 0, nh, nkv, hd);
}

void CpuBackend::attention_forward_offset(const float* q, const float* k, const float* v,
                                          float* out, float* lse, int64_t B, int64_t T,
                                          int64_t Tk, int64_t q0, int64_t nh, int64_t nkv,
                                          int64_t hd) {
  const AttnShape s{B, T, nh, nkv, hd, Tk, q0};
  check_shape(s, "attention_forward");
  const float scale = 1.f / std::sqrt(float(hd));
  const int64_t rows = B * nh * T;
#pragma omp parallel
  {
    std::vector<float> score(static_cast<size_t>(Tk)), acc(static_cast<size_t>(hd));  // one row
#pragma omp for schedule(dynamic, 8)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = r % T, h = (r / T) % nh, b = r / (T * nh), g = h / s.group();
      const float* qr = q + s.qi(b, t, h);
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j <= q0 + t; ++j) {
        score[j] = scale * dot(qr, k + s.ki(b, j, g), hd);
        mx = std::max(mx, score[j]);
      }
      float denom = 0.f;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j <= q0 + t; ++j) {
        const float p = std::exp(score[j] - mx);
        denom += p;
        const float* vj = v + s.ki(b, j, g);
        for (int64_t d = 0; d < hd; ++d) acc[d] += p * vj[d];
      }
      float* o = out + s.qi(b, t, h);
      for (int64_t d = 0; d < hd; ++d) o[d] = acc[d] / denom;
      lse[s.li(b, h, t)] = mx + std::log(denom);
    }
  }
}

void CpuBackend::attention_backward_offset(const float* dout, const float* q, const float* k,
                                           const float* v, const float* out, const float* lse,
                                           float* dq, float* dk, float* dv, int64_t B, int64_t T,
                                           int64_t Tk, int64_t q0, int64_t nh, int64_t nkv,
                                           int64_t hd) {
  const AttnShape s{B, T, nh, nkv, hd, Tk, q0};
  check_shape(s, "attention_backward");
  const float scale = 1.f / std::sqrt(float(hd));
  const int64_t q_rows = B * nh * T, kv_rows = B * nkv * Tk;

  // D[b,h,t] = <dout, out>: the softmax-backward correction term, one per query row.
  std::vector<float> D(q_rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < q_rows; ++r) {
    const int64_t t = r % T, h = (r / T) % nh, b = r / (T * nh);
    D[s.li(b, h, t)] = dot(dout + s.qi(b, t, h), out + s.qi(b, t, h), hd);
  }

  // dq[t] = scale * sum_{j<=q0+t} P_tj (<dout_t, v_j> - D_t) k_j
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t r = 0; r < q_rows; ++r) {
    const int64_t t = r % T, h = (r / T) % nh, b = r / (T * nh), g = h / s.group();
    const float* qr = q + s.qi(b, t, h);
    const float* dor = dout + s.qi(b, t, h);
    const float l = lse[s.li(b, h, t)], Dt = D[s.li(b, h, t)];
    float* dqr = dq + s.qi(b, t, h);
    std::fill(dqr, dqr + hd, 0.f);
    for (int64_t j = 0; j <= q0 + t; ++j) {
      const float* kj = k + s.ki(b, j, g);
      const float p = std::exp(scale * dot(qr, kj, hd) - l);
      const float ds = p * (dot(dor, v + s.ki(b, j, g), hd) - Dt);
      for (int64_t d = 0; d < hd; ++d) dqr[d] += scale * ds * kj[d];
    }
  }

  // dk[j] = scale * sum_h sum_{q0+t>=j} dS_tj q_t ;  dv[j] = sum_h sum_{q0+t>=j} P_tj dout_t
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t r = 0; r < kv_rows; ++r) {
    const int64_t j = r % Tk, g = (r / Tk) % nkv, b = r / (Tk * nkv);
    const float* kj = k + s.ki(b, j, g);
    const float* vj = v + s.ki(b, j, g);
    float* dkj = dk + s.ki(b, j, g);
    float* dvj = dv + s.ki(b, j, g);
    std::fill(dkj, dkj + hd, 0.f);
    std::fill(dvj, dvj + hd, 0.f);
    for (int64_t h = g * s.group(); h < (g + 1) * s.group(); ++h) {
      for (int64_t t = std::max<int64_t>(j - q0, 0); t < T; ++t) {
        const float* qt = q + s.qi(b, t, h);
        const float* dout_t = dout + s.qi(b, t, h);
        const float p = std::exp(scale * dot(qt, kj, hd) - lse[s.li(b, h, t)]);
        const float ds = p * (dot(dout_t, vj, hd) - D[s.li(b, h, t)]);
        for (int64_t d = 0; d < hd; ++d) {
          dkj[d] += scale * ds * qt[d];
          dvj[d] += p * dout_t[d];
        }
      }
    }
  }
}

}  // namespace origami
