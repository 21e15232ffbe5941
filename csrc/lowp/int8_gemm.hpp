// int8 inference: a dense layer y = act(x @ W + b) with W quantized per output column
// (symmetric int8, scale_j = max_p |W(p, j)| / 127) and x quantized per row on the fly
// (symmetric, scale_i = max_p |x(i, p)| / 127), multiplied as unsigned x signed bytes (x + 128
// against W, the AVX512-VNNI vpdpbusd form) in exact int32 arithmetic, then dequantized and
// finished in float32:
//   v(i, j) = float(sum_p (xq(i, p) + 128) W(p, j) - 128 colsum(j)) * (scale_i * scale_j)
//   v += b[j]; y = act(v)          (the float32 engine's activations)
// The integer part is exact, so every path and thread count gives the same bits.
// Quantization rounds to nearest even, within [-127, 127]: weights q = nearbyint(W / scale)
// (once, when packed); a row of x q = nearbyint(x * (1 / scale)) with the reciprocal rounded to
// float32 (fbgemm's rule: a multiply, not a division per element). A row of zeros has scale 0
// and q = 0; a row holding a non-finite value gives NaN outputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "activation_table.hpp"
#include "common.hpp"
#include "lowp/tile_loop.hpp"

namespace densekit::lowp {

// emulated: int32 arithmetic; avx512_vnni: vpdpbusd; amx: tdpbusd on AMX tiles. The sums are
// exact integers on every path, so every path gives the same bits.
enum class Int8Path { emulated = 0, avx512_vnni = 1, amx = 2 };

struct Int8Choice {
  Int8Path path = Int8Path::emulated;
  Int8Path best = Int8Path::emulated;
  bool forced = false;      // DENSEKIT_INT8 was set and honoured
  std::string requested;    // DENSEKIT_INT8 as given
  std::string note;         // why a request was not honoured
};

const Int8Choice& int8_choice();
bool int8_path_supported(Int8Path path);
const char* int8_path_name(Int8Path path);
bool int8_path_from_name(const std::string& name, Int8Path* path);

// The exactness bound: sum_p 255 * 127 must stay below 2^31.
constexpr index_t kMaxInt8Depth = 65536;

// W (k, n) float32 -> wq (k, n) int8 and scales (n,). Returns false (writing nothing useful)
// when W holds a non-finite value.
bool quantize_weights(const float* w, index_t k, index_t n, std::int8_t* wq, float* scales,
                      int num_threads);

// Quantized weights packed for the product: quads of k per 32-bit word (byte t = W(4q + t, j)),
// column sums and scales.
struct PackedInt8 {
  PackedPanels panels;
  std::vector<std::int32_t> col_sums;
  std::vector<float> scales;
};
PackedInt8 pack_int8(const std::int8_t* wq, const float* scales, index_t k, index_t n,
                     int num_threads);

struct Int8Epilogue {
  const float* bias = nullptr;  // (n,)
  Activation activation{};
};

// y (m, n) = act(dequantized x @ W + b); x (m, k) float32 row-major. A row activation
// (softmax, log_softmax) runs over the finished rows.
void dense_int8(index_t m, const float* x, const PackedInt8& w, float* y,
                const Int8Epilogue& epilogue, int num_threads);
void dense_int8_with_path(Int8Path path, index_t m, const float* x, const PackedInt8& w, float* y,
                          const Int8Epilogue& epilogue, int num_threads);

// The int8 path in use: operations of `steps` rounds of register-only multiply-adds on
// num_threads threads (TileSet::probe); the caller times the call for the peak rate.
double int8_peak_probe(index_t steps, int num_threads);

// The tiles (tile_loop.hpp): int32 accumulators, a word is 4 bytes of k (A unsigned, B signed).
TileSet<std::int32_t> int8_tiles_portable();
#if defined(DENSEKIT_HAVE_X86_KERNELS)
TileSet<std::int32_t> int8_tiles_avx2();
TileSet<std::int32_t> int8_tiles_avx512();
TileSet<std::int32_t> int8_tiles_avx512_vnni();
#endif
#if defined(DENSEKIT_HAVE_AMX_KERNELS)
TileSet<std::int32_t> int8_tiles_amx();
#endif

}  // namespace densekit::lowp
