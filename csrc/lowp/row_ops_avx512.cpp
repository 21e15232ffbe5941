// The row operations (row_ops.inc) built for the avx512 ISA (this file alone has its flags).
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <limits>

#include "lowp/row_ops.hpp"
#include "vecmath/scalar_activations.hpp"

namespace densekit::lowp {
namespace {
#include "lowp/row_ops.inc"
}  // namespace

RowOps row_ops_avx512() { return make_row_ops(); }

}  // namespace densekit::lowp
