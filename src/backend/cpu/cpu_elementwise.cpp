// defines: CpuBackend fill/add/axpy/scale and the ordered fp64 reductions sum/sum_squares
// sum/sum_squares split the array into fixed-size chunks whose partial sums are added in chunk
// order, so the result is the same bitwise for any number of OpenMP threads.
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace origami {

namespace {
constexpr int64_t kReduceChunk = 1 << 14;  // fixed chunking of the ordered reductions

template <typename F>
double ordered_chunk_sum(const float* x, int64_t n, F term) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kReduceChunk, hi = std::min(n, lo + kReduceChunk);
    double s = 0.0;
    for (int64_t i = lo; i < hi; ++i) s += term(double(x[i]));
    partial[c] = s;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}
}  // namespace

void CpuBackend::fill(float* x, float value, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}

void CpuBackend::add(const float* a, const float* b, float* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void CpuBackend::axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void CpuBackend::scale(float* x, float alpha, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] *= alpha;
}

double CpuBackend::sum_squares(const float* x, int64_t n) {
  return ordered_chunk_sum(x, n, [](double v) { return v * v; });
}

double CpuBackend::sum(const float* x, int64_t n) {
  return ordered_chunk_sum(x, n, [](double v) { return v; });
}

}  // namespace origami
