// defines: philox4x32(), Rng, hash_name()
// Counter-based randomness (Philox4x32-10, Salmon et al. 2011). A value depends only on
// (seed, stream, counter), never on call order, so a parameter shard is initialised to the same
// numbers whatever the parallel layout: stream = hash of the parameter's global name, counter =
// the element's global index. Any ordered use (dropout, noise) derives a stream the same way.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace origami {

inline std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(M0) * ctr[0];
    uint64_t p1 = uint64_t(M1) * ctr[2];
    ctr = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           uint32_t(p0)};
    key[0] += W0;
    key[1] += W1;
  }
  return ctr;
}

// FNV-1a 64-bit: stable across platforms and runs (std::hash is not).
inline uint64_t hash_name(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Stateless generator over one (seed, stream): value(i) is a pure function of i.
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}

  // Uniform in (0, 1), 24 bits of mantissa from the first word of the block for index i.
  double uniform(uint64_t i) const { return (double(bits(i)[0] >> 8) + 0.5) / 16777216.0; }

  // Standard normal via Box-Muller on two words of the same block.
  double normal(uint64_t i) const {
    auto b = bits(i);
    double u1 = (double(b[0] >> 8) + 0.5) / 16777216.0;
    double u2 = (double(b[1] >> 8) + 0.5) / 16777216.0;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  std::array<uint32_t, 4> bits(uint64_t i) const {
    return philox4x32({uint32_t(i), uint32_t(i >> 32), uint32_t(stream_), uint32_t(stream_ >> 32)},
                      {uint32_t(seed_), uint32_t(seed_ >> 32)});
  }

 private:
  uint64_t seed_, stream_;
};

}  // namespace origami
