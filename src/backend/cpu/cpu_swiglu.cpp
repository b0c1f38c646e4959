// defines: CpuBackend SwiGLU forward/backward on a fused [rows, 2F] input
// Parallel over rows; each element runs kernel_math::swiglu / swiglu_grad, as the CUDA kernel does.
#include "backend/cpu/cpu_backend.h"
#include "backend/kernel_math.h"

namespace origami {

void CpuBackend::swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) {
#pragma omp parallel for schedule(static) if (rows * F > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = h + r * 2 * F;
    const float* up = gate + F;
    float* o = out + r * F;
    for (int64_t j = 0; j < F; ++j) o[j] = kernel_math::swiglu(gate[j], up[j]);
  }
}

void CpuBackend::swiglu_backward(const float* dout, const float* h, float* dh, int64_t rows,
                                 int64_t F) {
#pragma omp parallel for schedule(static) if (rows * F > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = h + r * 2 * F;
    const float* up = gate + F;
    const float* d = dout + r * F;
    float* dgate = dh + r * 2 * F;
    float* dup = dgate + F;
    for (int64_t j = 0; j < F; ++j) kernel_math::swiglu_grad(gate[j], up[j], d[j], dgate[j], dup[j]);
  }
}

}  // namespace origami
