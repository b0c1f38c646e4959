// defines: linear_forward(), linear_backward()
// y = x W^T with W stored [out, in] (the Hugging Face / PyTorch convention, so export is a copy).
// Backward: dx = dy W (overwritten, or added when accumulate_dx), dW += dy^T x.
#pragma once
#include "backend/backend.h"

namespace origami {

inline GemmDesc linear_fwd_desc(const float* x, const float* w, float* y, int64_t n, int64_t in,
                                int64_t out, float beta = 0.f) {
  return GemmDesc{false, true, n, out, in, 1.f, x, in, w, in, beta, y, out, /*b_is_weight=*/true};
}
inline GemmDesc linear_dx_desc(const float* dy, const float* w, float* dx, int64_t n, int64_t in,
                               int64_t out, float beta = 0.f) {
  return GemmDesc{false, false, n, in, out, 1.f, dy, out, w, in, beta, dx, in, /*b_is_weight=*/true};
}
inline GemmDesc linear_dw_desc(const float* dy, const float* x, float* dw, int64_t n, int64_t in,
                               int64_t out) {
  return GemmDesc{true, false, out, in, n, 1.f, dy, out, x, in, 1.f, dw, in};
}

inline void linear_forward(Backend& be, const float* x, const float* w, float* y, int64_t n,
                           int64_t in, int64_t out, float beta = 0.f) {
  be.gemm(linear_fwd_desc(x, w, y, n, in, out, beta));
}

inline void linear_backward(Backend& be, const float* dy, const float* x, const float* w,
                            float* dx, float* dw, int64_t n, int64_t in, int64_t out,
                            bool accumulate_dx = false) {
  if (dx) be.gemm(linear_dx_desc(dy, w, dx, n, in, out, accumulate_dx ? 1.f : 0.f));
  be.gemm(linear_dw_desc(dy, x, dw, n, in, out));
}

}  // namespace origami
