// The elementwise work around the low-precision products, per ISA: rounding float32 to bf16
// (into halves, or into the pair words of two rows) and quantizing a row of x to unsigned int8.
// Each is written once (row_ops.inc) as plain loops and built by a translation unit per ISA,
// which vectorises it with that ISA's instructions; integer and IEEE arithmetic only, so every
// ISA gives the same bits.
#pragma once

#include <cstdint>

#include "common.hpp"
#include "lowp/bf16.hpp"

namespace densekit::lowp {

// Words per packed panel of B (tile_loop.hpp's kPanel).
constexpr index_t kRowPanel = 32;

struct RowOps {
  // y[t] = bf16(x[t]), t < count (exactly: subnormals kept; AVX512-BF16's conversion where
  // the bf16 path uses that ISA, row_ops_avx512_bf16.cpp)
  void (*round_to_bf16)(const float* x, bf16_bits* y, index_t count) = nullptr;
  // The same for an operand of a product, which may give a zero of x's sign for a subnormal x
  // (every product reads bf16 subnormals as zero): AVX512-BF16's conversion alone where the
  // bf16 path uses that ISA's instructions (row_ops_avx512_bf16.cpp), else round_to_bf16. The
  // roundings into pair words below are operand roundings too.
  void (*round_operand)(const float* x, bf16_bits* y, index_t count) = nullptr;
  // out[t] = bf16(lo[t]) | bf16(hi[t]) << 16, t < count; in these and the join below, a null
  // hi stands for a row of zeros (an odd k's last pair)
  void (*round_pairs)(const float* lo, const float* hi, std::uint32_t* out, index_t count) = nullptr;
  // out[t] = lo[t] | hi[t] << 16, t < count (two rows of bf16 into pair words)
  void (*join_pairs)(const bf16_bits* lo, const bf16_bits* hi, std::uint32_t* out,
                     index_t count) = nullptr;
  // The same two, written into B's panels: word t at out[(t / kRowPanel) * panel_stride + t %
  // kRowPanel], t < count, and zeros from count to the end of the last panel (word q of
  // every panel of a packed B in one pass along two of its rows)
  void (*round_pairs_panels)(const float* lo, const float* hi, index_t count, std::uint32_t* out,
                             index_t panel_stride) = nullptr;
  void (*join_pairs_panels)(const bf16_bits* lo, const bf16_bits* hi, index_t count,
                            std::uint32_t* out, index_t panel_stride) = nullptr;
  // out[q * ld_out + i] = 32-bit word q of rows[i] (bytes 4q..4q + 3), for i < count <= 16 and
  // q < words: rows written word-major (bf16 pairs or int8 quads of A's row tiles, a
  // transposed B's panels); rows need no alignment
  void (*word_major)(const void* const* rows, int count, index_t words, std::uint32_t* out,
                     index_t ld_out) = nullptr;
  // out[j] = float(acc[j] - 128 col_sums[j]) * (row_scale * scales[j]) (+ bias[j] when bias is
  // not null), j < count: an int8 product's row dequantized
  void (*dequantize_row)(const std::int32_t* acc, const std::int32_t* col_sums, const float* scales,
                         float row_scale, const float* bias, float* out, index_t count) = nullptr;
  // y[t] = float(x[t]), t < count (a bf16 activation or gradient widened)
  void (*widen)(const bf16_bits* x, float* y, index_t count) = nullptr;
  // dz[t] = dy[t] * (y[t] > 0 ? 1 : slope), y > 0 tested on its bits (relu's and leaky_relu's
  // derivative from the output, as activations.cpp's positive_slopes), t < count, from a bf16
  // y and a float32 dy32 or (dy32 null) a bf16 dy16
  void (*positive_slopes_bf16)(float* dz, const float* dy32, const bf16_bits* dy16,
                               const bf16_bits* y, index_t count, float slope) = nullptr;
  // v[j] = v[j] + a[j], j < count (an accumulated output, a bias)
  void (*add_rows)(float* v, const float* a, index_t count) = nullptr;
  // v[j] = relu(v[j]) (scalar::relu: NaN kept), and leaky_relu (v > 0 ? v : alpha v), in place
  void (*relu_row)(float* v, index_t count) = nullptr;
  void (*leaky_relu_row)(float* v, index_t count, float alpha) = nullptr;
  // Rows of x (rows <= kQuantizeBlock, row r at x + r * k, k values) quantized symmetrically
  // into out + r * stride: scale = max |x| / 127, out[p] = nearbyint(x[p] * (1 / scale)) + 128
  // clamped to [1, 255] (the reciprocal rounded to float32), out[k..stride) = 128; all 128 when
  // the scale is 0. scales[r] is the scale, or NaN (and all 128) when the row holds an inf or
  // NaN.
  void (*quantize_rows)(const float* x, index_t rows, index_t k, index_t stride,
                        std::uint8_t* out, float* scales) = nullptr;
};

constexpr index_t kQuantizeBlock = 16;  // rows per quantize_rows call

// The row operations of the float32 engine's ISA (and, where the bf16 path is not the
// emulated one, AVX512-BF16's roundings).
const RowOps& row_ops();

RowOps row_ops_portable();
#if defined(DENSEKIT_HAVE_X86_KERNELS)
RowOps row_ops_avx2();
RowOps row_ops_avx512();
RowOps row_ops_avx512_bf16();  // needs the CPU's AVX512-BF16 (bf16_path_supported)
#endif

}  // namespace densekit::lowp
