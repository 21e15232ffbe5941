// Shared vocabulary of the kernel library: index type and the error kernels throw.
// Kernels know nothing of Python; the bindings map these exceptions to Python ones.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace densekit {

using index_t = std::int64_t;

// An argument a kernel cannot accept (the bindings check first; this is the last line).
class ArgumentError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace densekit
