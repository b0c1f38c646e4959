// defines: DType, dtype_name(), bf16_bits(), bf16_to_float(), bf16_round(), bf16_round_inplace(),
//          activation_dtype()
// Storage types. Every value Origami computes with is fp32 inside an op; what differs between
// training.precision fp32 and bf16 is what a tensor STORES between ops. A bf16 store rounds the
// op's fp32 result to the nearest bfloat16 (ties to even), exactly what __float2bfloat16_rn does
// on the GPU, so the CPU reference and a device run agree on every stored value.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace origami {

enum class DType { f32, bf16 };

inline const char* dtype_name(DType t) { return t == DType::bf16 ? "bf16" : "fp32"; }

// The upper 16 bits of the nearest bfloat16 to x (round to nearest, ties to even). NaN stays a
// quiet NaN with its sign (adding the rounding bias could carry a NaN's payload into the exponent
// and make it infinity); infinities and values that round past the largest finite bf16 become
// infinity, as IEEE rounding requires.
inline uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// x rounded to the nearest bf16 value, as an fp32 (exact: every bf16 is an fp32).
inline float bf16_round(float x) { return bf16_to_float(bf16_bits(x)); }

inline void bf16_round_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = bf16_round(x[i]);
}

// "fp32" | "bf16" (training.precision) -> the dtype activations are stored in.
inline DType activation_dtype(const std::string& precision) {
  return precision == "bf16" ? DType::bf16 : DType::f32;
}

}  // namespace origami
