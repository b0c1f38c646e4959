// defines: randn(), Buf<T>, expect_close(), the CudaOps fixture (the CUDA op tests' helpers)
// Shared by tests/backend/test_cuda_<family>.cpp, each comparing one op family of the CUDA
// backend with the linked CPU reference on random inputs, outputs poisoned (NaN / -7) first so
// an unwritten element cannot pass. CudaOps skips (GTEST_SKIP) where no GPU is visible. Not in
// an anonymous namespace: every file's TEST_F(CudaOps, ...) must share one fixture type.
#pragma once
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <type_traits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_device.h"

namespace origami::cuda::testing {

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

// A buffer of T on one backend, filled from / read back to host vectors.
template <typename T>
struct Buf {
  Backend* be;
  T* p;
  size_t n;
  Buf(Backend& b, size_t count) : be(&b), n(count) { p = static_cast<T*>(b.allocate(sizeof(T) * std::max<size_t>(n, 1))); }
  Buf(Backend& b, const std::vector<T>& host) : Buf(b, host.size()) { set(host); }
  ~Buf() { be->deallocate(p); }
  Buf(const Buf&) = delete;
  void set(const std::vector<T>& h) { be->copy_from_host(p, h.data(), sizeof(T) * n); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    be->copy_to_host(h.data(), p, sizeof(T) * n);
    return h;
  }
  void poison() {  // NaN bit pattern for floats, -7 for ints
    std::vector<T> h(n);
    if constexpr (std::is_same_v<T, float>) std::fill(h.begin(), h.end(), std::nanf(""));
    else std::fill(h.begin(), h.end(), T(-7));
    set(h);
  }
};

// ||a - b|| / ||b|| <= tol, and no NaN anywhere.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                         const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << ": element " << i << " is NaN (unwritten?)";
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), tol) << what;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (device_count() == 0) GTEST_SKIP() << "no CUDA device";
    cpu = make_cpu_backend();
    gpu = std::make_unique<CudaBackend>(0, GemmPrecision::fp32);
  }
  std::unique_ptr<Backend> cpu;
  std::unique_ptr<CudaBackend> gpu;
  uint32_t seed = 1234;
};

}  // namespace origami::cuda::testing
#endif
