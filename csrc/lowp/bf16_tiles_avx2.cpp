// bf16 tiles emulated in float32 fma, compiled with the avx2 flags (see bf16_tiles.inc).
#include <cmath>
#include <cstdint>
#include <utility>

#include "lowp/bf16_gemm.hpp"

namespace densekit::lowp {
namespace {
#include "lowp/bf16_tiles.inc"
}  // namespace

Bf16Tiles bf16_tiles_avx2() { return all_tiles(); }

}  // namespace densekit::lowp
