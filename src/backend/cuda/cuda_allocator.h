// defines: cuda::CachingAllocator
// Stream-ordered device memory with current/peak statistics. Built on cudaMallocAsync with the
// device's default pool told never to release memory (release threshold = max), so freed blocks
// are reused by later allocations on the stream without a cudaMalloc or a synchronisation.
// Memory is handed back to the driver only by release_cached() or on an out-of-memory retry.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <unordered_map>

namespace origami::cuda {

class CachingAllocator {
 public:
  // Uses the current device; throws Error if there is none.
  explicit CachingAllocator(cudaStream_t stream = nullptr);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Ordered on the allocator's stream: the memory is usable by work queued on it afterwards.
  void* allocate(size_t bytes);
  void deallocate(void* p);

  size_t bytes_in_use() const;    // requested bytes currently allocated
  size_t peak_bytes() const;      // maximum of bytes_in_use() so far
  size_t bytes_reserved() const;  // held from the driver by the pool (in use + cached)
  void release_cached();          // returns unused pool memory to the driver (synchronises)

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  cudaStream_t stream_;
  int device_ = -1;
  cudaMemPool_t pool_ = nullptr;
  mutable std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  size_t in_use_ = 0, peak_ = 0;
};

}  // namespace origami::cuda
