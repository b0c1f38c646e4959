// defines: ShuffleRng, uniform_below(), fisher_yates()
// The dataset shuffles must give the same order on every machine and compiler, so they use
// std::mt19937_64 (its output sequence is fixed by the C++ standard) with our own unbiased
// bounded draw and Fisher-Yates loop; std::shuffle and std::uniform_int_distribution are
// implementation-defined and differ between standard libraries.
#pragma once
#include <cstdint>
#include <random>
#include <span>

namespace origami {

using ShuffleRng = std::mt19937_64;

// Uniform integer in [0, n), n >= 1, by rejection (no modulo bias).
inline uint64_t uniform_below(ShuffleRng& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // largest multiple of n, exclusive
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

// In-place Fisher-Yates: for i = n-1 .. 1 swap v[i] with v[uniform_below(i + 1)].
template <typename T> void fisher_yates(std::span<T> v, ShuffleRng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = size_t(uniform_below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace origami
