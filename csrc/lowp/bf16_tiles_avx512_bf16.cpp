// bf16 tiles on AVX512-BF16's vdpbf16ps. This file alone is compiled with -mavx512bf16 (beside
// -mavx512f -mavx512bw -mavx512vl); it is entered only after the CPU check in bf16_gemm.cpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "lowp/bf16_gemm.hpp"

#define DENSEKIT_BF16_NATIVE 1

namespace densekit::lowp {
namespace {
#include "lowp/bf16_tiles.inc"
}  // namespace

Bf16Tiles bf16_tiles_avx512_bf16() { return all_tiles(); }

}  // namespace densekit::lowp
