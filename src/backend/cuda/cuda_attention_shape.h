// defines: cuda::AttentionShape, the geometry both attention kernel families index by
// Queries [B,Tq,nh,hd] at positions q_start .. q_start+Tq-1 against keys/values [B,Tk,nkv,hd]
// (q_start + Tq <= Tk), lse [B,nh,Tq]. The square op is Tq = Tk, q_start = 0.
#pragma once
#include <cstdint>

namespace origami::cuda {

struct AttentionShape {
  int64_t B, Tq, Tk, q_start, nh, nkv, hd;
  __device__ int64_t qi(int64_t b, int64_t t, int64_t h) const { return ((b * Tq + t) * nh + h) * hd; }
  __device__ int64_t ki(int64_t b, int64_t t, int64_t g) const { return ((b * Tk + t) * nkv + g) * hd; }
  __device__ int64_t li(int64_t b, int64_t h, int64_t t) const { return (b * nh + h) * Tq + t; }
  // The last key any of query rows [q0, q0 + rows) attends (causal).
  __device__ int64_t last_key(int64_t q0, int64_t rows) const {
    const int64_t last_row = q0 + rows - 1 < Tq - 1 ? q0 + rows - 1 : Tq - 1;
    return q_start + last_row;
  }
};

}  // namespace origami::cuda
