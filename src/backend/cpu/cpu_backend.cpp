// defines: CpuBackend memory (64-byte aligned, zeroed, with in-use/peak statistics), copies,
// make_cpu_backend(). The allocation table is guarded by a mutex: threads may allocate.
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "base/error.h"

namespace origami {

namespace {
constexpr size_t kAlignment = 64;
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

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace origami
