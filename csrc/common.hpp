// Shared vocabulary of the kernel library: index type and the error kernels throw.
// Kernels know nothing of Python; the bindings map these exceptions to Python ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

namespace densekit {

using index_t = std::int64_t;

// An argument a kernel cannot accept (the bindings check first; this is the last line).
class ArgumentError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// a * b elements of `bytes` each, for a buffer: std::bad_alloc (MemoryError in Python) when
// the byte count does not fit in size_t, so that an overflowing size never becomes a small
// buffer that the kernel then writes past.
inline std::size_t buffer_bytes(index_t a, index_t b, std::size_t bytes) {
  std::size_t elements = 0;
  std::size_t total = 0;
  if (a < 0 || b < 0 ||
      __builtin_mul_overflow(static_cast<std::size_t>(a), static_cast<std::size_t>(b), &elements) ||
      __builtin_mul_overflow(elements, bytes, &total))
    throw std::bad_alloc();
  return total;
}

}  // namespace densekit
