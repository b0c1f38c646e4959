// Tests of the CUDA device plumbing (built only with CUDA): CUDA_CHECK's message, the clear
// errors on a machine without a GPU, and, where a GPU is present, device selection, the caching
// allocator's statistics and CudaTimer. GPU-only checks GTEST_SKIP when no device is visible.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <string>

#include "backend/backend.h"
#include "backend/cuda/cuda_allocator.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_device.h"
#include "backend/cuda/cuda_timer.h"
#include "base/error.h"

namespace origami::cuda {
namespace {

std::string error_of(const auto& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CudaCheck, NamesTheErrorTheCallAndTheSite) {
  const std::string msg = error_of([] { CUDA_CHECK(cudaErrorInvalidValue); });
  EXPECT_NE(msg.find("cudaErrorInvalidValue"), std::string::npos) << msg;
  EXPECT_NE(msg.find("`cudaErrorInvalidValue`"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test_cuda_device.cpp:"), std::string::npos) << msg;
  EXPECT_NO_THROW(CUDA_CHECK(cudaSuccess));
}

TEST(CudaDevice, WithoutGpuEveryEntryPointFailsClearly) {
  if (device_count() > 0) GTEST_SKIP() << "a GPU is visible";
  const std::string msg = error_of([] { select_device_for_local_rank(3); });
  EXPECT_NE(msg.find("local rank 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("device count is 0"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { CachingAllocator a; }).find("needs a GPU"), std::string::npos);
  EXPECT_NE(error_of([] { CudaTimer t; }).find("needs a GPU"), std::string::npos);
  EXPECT_THROW(make_backend("cuda", 0), Error);
}

TEST(CudaDevice, SelectionWrapsAroundTheDeviceCount) {
  const int count = device_count();
  if (count == 0) GTEST_SKIP() << "no GPU visible";
  EXPECT_EQ(select_device_for_local_rank(count + 1), 1 % count);
  int current = -1;
  CUDA_CHECK(cudaGetDevice(&current));
  EXPECT_EQ(current, 1 % count);
  EXPECT_NE(error_of([] { select_device_for_local_rank(-1); }).find("negative"), std::string::npos);
  select_device_for_local_rank(0);
}

TEST(CudaAllocator, StatisticsReuseAndTimer) {
  if (device_count() == 0) GTEST_SKIP() << "no GPU visible";
  select_device_for_local_rank(0);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  {
    CachingAllocator alloc(stream);
    void* a = alloc.allocate(1 << 20);
    void* b = alloc.allocate(100);
    EXPECT_EQ(alloc.bytes_in_use(), (1u << 20) + 100);
    EXPECT_GE(alloc.bytes_reserved(), alloc.bytes_in_use());
    CudaTimer timer(stream);
    timer.start();
    CUDA_CHECK(cudaMemsetAsync(a, 1, 1 << 20, stream));
    timer.stop();
    EXPECT_GE(timer.elapsed_ms(), 0.f);
    alloc.deallocate(a);
    EXPECT_EQ(alloc.bytes_in_use(), 100u);
    EXPECT_EQ(alloc.peak_bytes(), (1u << 20) + 100);
    const size_t reserved = alloc.bytes_reserved();
    void* c = alloc.allocate(1 << 20);  // served from the pool: no growth
    EXPECT_EQ(alloc.bytes_reserved(), reserved);
    alloc.deallocate(c);
    alloc.deallocate(b);
    EXPECT_THROW(alloc.deallocate(b), Error);
    alloc.release_cached();
    EXPECT_EQ(alloc.bytes_in_use(), 0u);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace origami::cuda
#endif  // ORIGAMI_WITH_CUDA
