// bfloat16 values as their 16 bits (the upper half of a float32), and the conversions.
//
// float -> bf16 rounds to nearest, ties to even, as ml_dtypes.bfloat16 does (the NumPy dtype the
// Python layer uses at the boundary): subnormals are kept, infinities stay infinite, a NaN stays
// a NaN (made quiet, sign kept). bf16 -> float is exact.
#pragma once

#include <cstdint>
#include <cstring>

namespace densekit::lowp {

using bf16_bits = std::uint16_t;

inline float float_from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline std::uint32_t bits_from_float(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bf16_to_float(bf16_bits h) { return float_from_bits(std::uint32_t(h) << 16); }

inline bf16_bits float_to_bf16(float f) {
  std::uint32_t u = bits_from_float(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_bits((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_bits(u >> 16);
}

}  // namespace densekit::lowp
