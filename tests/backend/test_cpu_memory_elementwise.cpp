// Tests of the CPU backend's memory (alignment, zeroing, statistics, misuse errors), the
// elementwise ops, the fp64 reductions and make_backend's name handling.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "backend/backend.h"
#include "backend_test_util.h"
#include "base/error.h"

namespace origami {
namespace {

using testing::random_vector;

TEST(CpuMemory, AlignedZeroedAndCounted) {
  auto be = make_backend("cpu");
  EXPECT_EQ(be->name(), "cpu");
  EXPECT_EQ(be->bytes_in_use(), 0u);
  auto* a = static_cast<unsigned char*>(be->allocate(1000));
  auto* b = static_cast<unsigned char*>(be->allocate(24));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a[i], 0) << i;
  EXPECT_EQ(be->bytes_in_use(), 1024u);
  be->deallocate(a);
  EXPECT_EQ(be->bytes_in_use(), 24u);
  EXPECT_EQ(be->peak_bytes(), 1024u);
  void* c = be->allocate(500);
  EXPECT_EQ(be->peak_bytes(), 1024u);  // 524 in use never exceeded the earlier peak
  be->deallocate(b);
  be->deallocate(c);
  be->deallocate(nullptr);
  EXPECT_EQ(be->bytes_in_use(), 0u);
}

TEST(CpuMemory, ReusedMemoryIsZeroedAgain) {
  auto be = make_backend("cpu");
  auto* a = static_cast<float*>(be->allocate(4096));
  be->fill(a, 3.f, 1024);
  be->deallocate(a);
  auto* b = static_cast<float*>(be->allocate(4096));
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(b[i], 0.f) << i;
  be->deallocate(b);
}

TEST(CpuMemory, ForeignOrDoubleFreeIsAnError) {
  auto be = make_backend("cpu");
  int on_stack = 0;
  EXPECT_THROW(be->deallocate(&on_stack), Error);
  void* p = be->allocate(8);
  be->deallocate(p);
  try {
    be->deallocate(p);
    FAIL() << "double free not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did not allocate"), std::string::npos) << e.what();
  }
}

TEST(CpuMemory, Copies) {
  auto be = make_backend("cpu");
  auto src = random_vector(37, 1);
  auto* dev = static_cast<float*>(be->allocate(37 * sizeof(float)));
  auto* dev2 = static_cast<float*>(be->allocate(37 * sizeof(float)));
  be->copy_from_host(dev, src.data(), 37 * sizeof(float));
  be->copy(dev2, dev, 37 * sizeof(float));
  std::vector<float> back(37);
  be->copy_to_host(back.data(), dev2, 37 * sizeof(float));
  be->synchronize();
  EXPECT_EQ(std::memcmp(back.data(), src.data(), 37 * sizeof(float)), 0);
  be->deallocate(dev);
  be->deallocate(dev2);
}

TEST(CpuElementwise, FillAddAxpyScale) {
  auto be = make_backend("cpu");
  const int64_t n = 100003;  // above the parallel threshold, not a multiple of anything
  auto a = random_vector(n, 2), b = random_vector(n, 3);
  std::vector<float> out(n), y = b;
  be->add(a.data(), b.data(), out.data(), n);
  be->axpy(-0.5f, a.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(out[i], a[i] + b[i]) << i;
    ASSERT_EQ(y[i], b[i] + -0.5f * a[i]) << i;
  }
  be->scale(y.data(), 2.f, n);
  EXPECT_EQ(y[17], 2.f * (b[17] + -0.5f * a[17]));
  be->fill(out.data(), 1.25f, n - 1);
  EXPECT_EQ(out[0], 1.25f);
  EXPECT_EQ(out[n - 2], 1.25f);
  EXPECT_EQ(out[n - 1], a[n - 1] + b[n - 1]);  // fill touched exactly n-1 entries
}

TEST(CpuReductions, SumAndSumSquaresInDouble) {
  auto be = make_backend("cpu");
  // Spans several reduction chunks. 1 + tiny values: an fp32 accumulator would lose the tiny
  // parts entirely, fp64 keeps them (the reference sums in long double).
  const int64_t n = 70001;
  auto x = random_vector(n, 4);
  x[0] = 1e4f;
  long double s = 0, ss = 0;
  for (float v : x) {
    s += v;
    ss += (long double)v * v;
  }
  // fp64 over 7e4 terms: ~1e-12 relative; an fp32 accumulator would be ~1e-3 off: 1e-9.
  EXPECT_NEAR(be->sum(x.data(), n), double(s), 1e-9 * std::abs(double(s)) + 1e-9);
  // Positive terms in fp64: a random walk of roundings, ~sqrt(n) * 1e-16 = 3e-14: 1e-12.
  EXPECT_NEAR(be->sum_squares(x.data(), n), double(ss), 1e-12 * double(ss));
  EXPECT_EQ(be->sum(x.data(), 0), 0.0);
}

TEST(MakeBackend, UnknownNameIsAnErrorNamingTheAllowedValues) {
  try {
    make_backend("tpu");
    FAIL() << "no error for an unknown backend";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cpu, cuda"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace origami
