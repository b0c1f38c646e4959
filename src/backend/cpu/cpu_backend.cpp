// defines: CpuBackend memory (64-byte aligned, zeroed, with in-use/peak statistics),
// elementwise ops, and the fp64 reductions.
// sum/sum_squares split the array into fixed-size chunks whose partial sums are added in chunk
// order, so the result is the same bitwise for any number of OpenMP threads.
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/error.h"

namespace origami {

namespace {
constexpr size_t kAlignment = 64;
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

CpuBackend::~CpuBackend() {
  // Buffers still owned by callers die with the backend; leaking them would hide nothing useful.
  for (auto& [p, bytes] : sizes_) std::free(p);
}

void* CpuBackend::allocate(size_t bytes) {
  // aligned_alloc needs a size multiple of the alignment; a zero-byte request still gets a
  // unique pointer so deallocate() stays uniform.
  const size_t rounded = std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (!p) {
    fail("cpu backend: allocating {} bytes failed (in use: {} bytes, peak: {} bytes)", bytes,
         bytes_in_use(), peak_bytes());
  }
  std::memset(p, 0, rounded);
  std::lock_guard lock(mu_);
  sizes_[p] = bytes;
  in_use_ += bytes;
  peak_ = std::max(peak_, in_use_);
  return p;
}

void CpuBackend::deallocate(void* p) {
  if (!p) return;
  std::lock_guard lock(mu_);
  auto it = sizes_.find(p);
  check(it != sizes_.end(),
        "cpu backend: deallocate({}) of a pointer this backend did not allocate (or freed twice)",
        p);
  in_use_ -= it->second;
  sizes_.erase(it);
  std::free(p);
}

void CpuBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host_dst, src, bytes);
}
void CpuBackend::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  if (bytes) std::memcpy(dst, host_src, bytes);
}
void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}

size_t CpuBackend::bytes_in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}
size_t CpuBackend::peak_bytes() const {
  std::lock_guard lock(mu_);
  return peak_;
}

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

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace origami
