// defines: expect_same_gradients() — the layout-equivalence oracle of the
// multi-rank training tests: every local gradient element of a parallel run, mapped to its global
// index through the parameter's shard spec, equals the 1-rank run's within fp32 tolerance.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/parameters.h"

namespace origami {

// zero_ok: parameters without gradient are expected (the diversify phase trains expert 0 alone).
inline void expect_same_gradients(const ParamStore& par, const ParamStore& ref, const std::string& name,
                           bool zero_ok = false) {
  for (const Param& p : par.all()) {
    const Param& r = ref.find(p.spec.name);
    ASSERT_EQ(r.spec.global_shape, p.spec.global_shape) << p.spec.name;
    float max_abs = 0.f;
    for (int64_t i = 0; i < r.grad.numel(); ++i) max_abs = std::max(max_abs, std::abs(r.grad.data()[i]));
    if (!zero_ok) ASSERT_GT(max_abs, 0.f) << p.spec.name << " has no gradient in the reference";
    int bad = 0;
    for (int64_t i = 0; i < p.grad.numel() && bad < 3; ++i) {
      const float a = p.grad.data()[i], b = r.grad.data()[p.spec.global_index(i)];
      // fp32 sums in another order: ~1e-6 of the tensor's scale.
      if (std::abs(a - b) > 1e-5f * max_abs + 1e-5f * std::abs(b)) {
        ++bad;
        ADD_FAILURE() << name << ": " << p.spec.name << " local " << i << ": " << a << " vs 1-rank "
                      << b;
      }
    }
  }
}

}  // namespace origami
