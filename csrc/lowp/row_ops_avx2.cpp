// The row operations (row_ops.inc) built for the avx2 ISA (this file alone has its flags).
#include <cstdint>
#include <cstring>
#include <limits>

#include "lowp/row_ops.hpp"
#include "vecmath/scalar_activations.hpp"

namespace densekit::lowp {
namespace {
#include "lowp/row_ops.inc"
}  // namespace

RowOps row_ops_avx2() { return make_row_ops(); }

}  // namespace densekit::lowp
