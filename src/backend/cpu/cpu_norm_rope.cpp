// defines: CpuBackend RMSNorm forward/backward and rotary embedding forward/backward
// RMSNorm's dw sums over rows, so its backward runs two passes: dx parallel over rows, then dw
// parallel over column blocks with rows in order (deterministic for any thread count).
// RoPE angles are computed in double (kernel_math.h: the frequency, angle and rotation shared
// with the CUDA kernel); cos/sin once per row and pair, reused by every head.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/kernel_math.h"
#include "base/error.h"

namespace origami {

namespace {
constexpr int64_t kColumnBlock = 64;

// Rotates every head of every row by +angle (sign = 1) or -angle (sign = -1), in place.
void rotate(float* x, const int32_t* positions, int64_t rows, int64_t heads, int64_t hd,
            float theta, double sign) {
  check(hd % 2 == 0, "rope: head_dim must be even (got {})", hd);
  const int64_t half = hd / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = kernel_math::rope_inv_freq(i, hd, theta);
#pragma omp parallel
  {
    std::vector<float> cs(half), sn(half);  // per-thread cos/sin of the current row
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = kernel_math::rope_angle(positions[r], inv_freq[i], sign);
        cs[i] = float(std::cos(angle));
        sn[i] = float(std::sin(angle));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (r * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) kernel_math::rope_rotate(v[i], v[i + half], cs[i], sn[i]);
      }
    }
  }
}
}  // namespace

void CpuBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd,
                                 int64_t rows, int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double ss = 0.0;
    for (int64_t j = 0; j < dim; ++j) ss += double(xr[j]) * xr[j];
    const float rs = float(1.0 / std::sqrt(ss / double(dim) + double(eps)));
    rstd[r] = rs;
    float* yr = y + r * dim;
    for (int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * rs * w[j];
  }
}

void CpuBackend::rmsnorm_backward(const float* dy, const float* x, const float* w,
                                  const float* rstd, float* dx, float* dw, int64_t rows,
                                  int64_t dim) {
  // dx_j = rs * w_j * dy_j - x_j * rs^3 / dim * sum_i(dy_i * w_i * x_i)
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* dyr = dy + r * dim;
    double dot = 0.0;
    for (int64_t j = 0; j < dim; ++j) dot += double(dyr[j]) * w[j] * xr[j];
    const double rs = rstd[r];
    const float c = float(dot * rs * rs * rs / double(dim));
    const float rsf = float(rs);
    float* dxr = dx + r * dim;
    for (int64_t j = 0; j < dim; ++j) dxr[j] = rsf * w[j] * dyr[j] - xr[j] * c;
  }
  const int64_t blocks = (dim + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kColumnBlock, hi = std::min(dim, lo + kColumnBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      const float* dyr = dy + r * dim;
      const float rs = rstd[r];
      for (int64_t j = lo; j < hi; ++j) dw[j] += dyr[j] * xr[j] * rs;
    }
  }
}

void CpuBackend::rope_forward(float* x, const int32_t* positions, int64_t rows, int64_t heads,
                              int64_t head_dim, float theta) {
  rotate(x, positions, rows, heads, head_dim, theta, 1.0);
}

void CpuBackend::rope_backward(float* dx, const int32_t* positions, int64_t rows, int64_t heads,
                               int64_t head_dim, float theta) {
  rotate(dx, positions, rows, heads, head_dim, theta, -1.0);
}

}  // namespace origami
