// int8 tiles on AVX512-VNNI's vpdpbusd. This file alone is compiled with -mavx512vnni (beside
// -mavx512f -mavx512bw); it is entered only after the CPU check in int8_gemm.cpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "lowp/int8_gemm.hpp"

#define DENSEKIT_INT8_NATIVE 1

namespace densekit::lowp {
namespace {
#include "lowp/int8_tiles.inc"
}  // namespace

TileSet<std::int32_t> int8_tiles_avx512_vnni() { return all_tiles(); }

}  // namespace densekit::lowp
