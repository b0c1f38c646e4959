// defines: random_vector(), weighted_sum(), finite_diff(), expect_grad_near(), expect_near_rel()
// Shared helpers of the backend tests: every backward op is checked against central finite
// differences of a scalar L = sum(out * R) for a fixed random R, evaluated in double around the
// fp32 forward ops. The step actually taken is (float(x+h) - float(x-h)), not 2h, so the fp32
// rounding of the perturbed input does not bias the quotient.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace origami::testing {

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

inline double weighted_sum(const std::vector<float>& out, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < out.size(); ++i) s += double(out[i]) * double(r[i]);
  return s;
}

// dL/dx[i] by central differences; `loss` re-runs the forward with the current x.
template <typename Loss>
std::vector<double> finite_diff(std::vector<float>& x, Loss loss, double h) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float x0 = x[i];
    x[i] = float(double(x0) + h);
    const double xp = x[i], lp = loss();
    x[i] = float(double(x0) - h);
    const double xm = x[i], lm = loss();
    x[i] = x0;
    g[i] = (lp - lm) / (xp - xm);
  }
  return g;
}

// |analytic - fd| <= rtol * max(|fd|, floor_frac * max|fd|). The floor exists because fp32
// rounding noise in L scales with the size of the terms, not with a gradient entry that happens
// to cancel to nearly zero. Also asserts that the gradient is not trivially zero, so a backward
// that writes nothing cannot pass.
inline void expect_grad_near(const std::vector<float>& analytic, const std::vector<double>& fd,
                             double rtol, const std::string& what, double floor_frac = 0.05) {
  ASSERT_EQ(analytic.size(), fd.size()) << what;
  double scale = 0.0;
  for (double g : fd) scale = std::max(scale, std::abs(g));
  ASSERT_GT(scale, 1e-6) << what << ": finite-difference gradient is zero; the test is vacuous";
  int bad = 0;
  for (size_t i = 0; i < fd.size(); ++i) {
    const double bound = rtol * std::max(std::abs(fd[i]), floor_frac * scale);
    if (std::abs(double(analytic[i]) - fd[i]) > bound && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << " vs finite diff "
                    << fd[i] << " (bound " << bound << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << fd.size() << " entries off";
}

// Elementwise |got - want| <= rtol * |want| + atol.
inline void expect_near_rel(const std::vector<float>& got, const std::vector<double>& want,
                            double rtol, double atol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::abs(double(got[i]) - want[i]) > rtol * std::abs(want[i]) + atol && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

}  // namespace origami::testing
