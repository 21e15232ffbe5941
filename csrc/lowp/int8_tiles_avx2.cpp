// int8 tiles in int32 arithmetic, compiled with the avx2 flags (see int8_tiles.inc).
#include <cstdint>
#include <utility>

#include "lowp/int8_gemm.hpp"

namespace densekit::lowp {
namespace {
#include "lowp/int8_tiles.inc"
}  // namespace

TileSet<std::int32_t> int8_tiles_avx2() { return all_tiles(); }

}  // namespace densekit::lowp
