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

// float -> bf16 on the bits, without branches (a select), so that loops over arrays vectorise
// on every ISA; a NaN is kept quiet with its sign and top payload bits.
inline std::uint32_t bf16_round_bits(std::uint32_t u) {
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t quiet_nan = (u >> 16) | 0x0040u;
  // magnitude bits as a signed int: the compare is one the baseline ISA has
  return static_cast<std::int32_t>(u & 0x7fffffffu) > 0x7f800000 ? quiet_nan : rounded;
}

inline bf16_bits float_to_bf16(float f) { return bf16_bits(bf16_round_bits(bits_from_float(f))); }

}  // namespace densekit::lowp
