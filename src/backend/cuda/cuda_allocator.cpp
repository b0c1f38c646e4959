// defines: cuda::CachingAllocator (see cuda_allocator.h)
#include "backend/cuda/cuda_allocator.h"

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_device.h"
#include "base/error.h"

namespace origami::cuda {

CachingAllocator::CachingAllocator(cudaStream_t stream) : stream_(stream) {
  require_device("the CUDA caching allocator");
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device_));
  uint64_t keep_everything = UINT64_MAX;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_everything));
}

CachingAllocator::~CachingAllocator() {
  // No throwing from a destructor: outstanding blocks are freed best-effort.
  for (auto& [p, bytes] : sizes_) cudaFreeAsync(p, stream_);
  cudaStreamSynchronize(stream_);
}

void* CachingAllocator::allocate(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) bytes = 1;  // a unique pointer keeps deallocate() uniform
  cudaError_t err = cudaMallocAsync(&p, bytes, stream_);
  if (err == cudaErrorMemoryAllocation) {
    // The pool may hold enough memory in blocks of the wrong sizes: give them back and retry.
    cudaGetLastError();
    release_cached();
    err = cudaMallocAsync(&p, bytes, stream_);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("CUDA out of memory on device {}: requested {} bytes with {} in use (peak {}), {} free "
         "of {}",
         device_, bytes, bytes_in_use(), peak_bytes(), free_b, total_b);
  }
  CUDA_CHECK(err);
  std::lock_guard lock(mu_);
  sizes_[p] = bytes;
  in_use_ += bytes;
  peak_ = std::max(peak_, in_use_);
  return p;
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  {
    std::lock_guard lock(mu_);
    auto it = sizes_.find(p);
    check(it != sizes_.end(),
          "CUDA allocator (device {}): deallocate({}) of a pointer it did not allocate (or freed "
          "twice)",
          device_, p);
    in_use_ -= it->second;
    sizes_.erase(it);
  }
  CUDA_CHECK(cudaFreeAsync(p, stream_));
}

size_t CachingAllocator::bytes_in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}

size_t CachingAllocator::peak_bytes() const {
  std::lock_guard lock(mu_);
  return peak_;
}

size_t CachingAllocator::bytes_reserved() const {
  uint64_t reserved = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &reserved));
  return size_t(reserved);
}

void CachingAllocator::release_cached() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0));
}

}  // namespace origami::cuda
