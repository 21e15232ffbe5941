// Branch-free arithmetic on the bits of floats, shared by the elementwise kernels (losses,
// activations): GCC does not vectorise float comparisons under the default -ftrapping-math,
// but it does vectorise the same tests made on the integers of the floats' bits.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace densekit {

template <typename To, typename From>
inline To bit_cast(From value) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  To result;
  std::memcpy(&result, &value, sizeof result);
  return result;
}

// The signed integer of a float type's width, and its sign and magnitude masks.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
template <typename T>
constexpr Bits<T> kSignBit = std::numeric_limits<Bits<T>>::min();
template <typename T>
constexpr Bits<T> kMagnitudeBits = std::numeric_limits<Bits<T>>::max();
template <typename T>
constexpr Bits<T> kInfinityBits = sizeof(T) == 4 ? Bits<T>{0x7f800000}
                                                 : static_cast<Bits<T>>(0x7ff0000000000000);

// All ones where the condition holds, else 0.
template <typename T>
inline Bits<T> mask_if(bool condition) {
  return -static_cast<Bits<T>>(condition);
}

// if_set where mask is all ones, otherwise where it is 0.
template <typename T>
inline T select(Bits<T> mask, T if_set, T otherwise) {
  return bit_cast<T>((bit_cast<Bits<T>>(if_set) & mask) |
                     (bit_cast<Bits<T>>(otherwise) & ~mask));
}

// A float's bits as a signed integer ordered as the values: +0 and -0 the same key, the
// negatives below; NaN's keys lie beyond +-inf's, so the callers test for NaN apart.
template <typename T>
inline Bits<T> order_key(T v) {
  const Bits<T> bits = bit_cast<Bits<T>>(v);
  return bits >= 0 ? bits : kSignBit<T> - bits;
}

template <typename T>
inline bool is_nan_bits(T v) {
  return (bit_cast<Bits<T>>(v) & kMagnitudeBits<T>) > kInfinityBits<T>;
}

}  // namespace densekit
