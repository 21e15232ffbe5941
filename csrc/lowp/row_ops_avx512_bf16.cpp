// The bf16 roundings of the row operations with AVX512-BF16's conversion (vcvtne2ps2bf16: 32
// floats to bf16, round to nearest even, in one instruction where the integer rounding of
// row_ops.inc takes about ten per 16 and is bound by the two vector ports). This file alone
// has the -mavx512bf16 flags; the other row operations are the avx512 ISA's.
// The conversion reads float32 subnormals as zero. For operands (RowOps::round_operand,
// round_pairs, round_pairs_panels) that is harmless: every product reads bf16 subnormals as
// zero (bf16_gemm.hpp), so a product's bits are those of the exactly rounded operands. The
// exact rounding (round_to_bf16: outputs, to_bfloat16) converts vectors without a subnormal
// and rounds a vector holding one with integers; NaNs convert as the integer rounding does
// (quiet bit set, payload truncated), checked bit for bit against it.
#include <immintrin.h>

#include <cstdint>

#include "lowp/row_ops.hpp"

namespace densekit::lowp {
namespace {

inline __mmask16 lanes(index_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << (left > 0 ? left : 0)) - 1u);
}

// 16 floats (lanes below `left`, zeros past them) rounded to bf16
inline __m256i round16(const float* x, index_t left) {
  const __m512 v = left >= 16 ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(lanes(left), x);
  return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
}

// The exact rounding (round_to_bf16's bits, subnormals kept): the conversion, and for a vector
// that holds a subnormal, the integer rounding of row_ops.inc (here bf16_round_bits per lane).
inline __m256i round16_exact(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);  // subnormal: exponent zero, mantissa not
  if ((_mm512_testn_epi32_mask(bits, _mm512_set1_epi32(0x7f800000)) &
       _mm512_test_epi32_mask(bits, _mm512_set1_epi32(0x007fffff))) == 0)
    return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
  alignas(64) std::uint32_t u[16];
  alignas(32) bf16_bits h[16];
  _mm512_store_si512(u, _mm512_castps_si512(v));
  for (int i = 0; i < 16; ++i) h[i] = static_cast<bf16_bits>(bf16_round_bits(u[i]));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(h));
}

void round_to_bf16_row(const float* __restrict x, bf16_bits* __restrict y, index_t count) {
  index_t t = 0;
  for (; t + 16 <= count; t += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + t), round16_exact(_mm512_loadu_ps(x + t)));
  if (t < count)
    _mm256_mask_storeu_epi16(y + t, lanes(count - t),
                             round16_exact(_mm512_maskz_loadu_ps(lanes(count - t), x + t)));
}

void round_operand_row(const float* __restrict x, bf16_bits* __restrict y, index_t count) {
  index_t t = 0;
  for (; t + 32 <= count; t += 32) {
    const __m512bh r = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + t + 16), _mm512_loadu_ps(x + t));
    _mm512_storeu_si512(y + t, reinterpret_cast<__m512i>(r));
  }
  for (; t < count; t += 16) {
    const index_t left = count - t;
    if (left >= 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + t), round16(x + t, 16));
    } else {
      _mm256_mask_storeu_epi16(y + t, lanes(left), round16(x + t, left));
    }
  }
}

// Words t..t + 15: bf16(lo[t]) | bf16(hi[t]) << 16 (hi null: zeros), zero at and past count.
// The two halves are converted together (lo's in the low 256 bits) and interleaved by 16-bit
// lanes.
inline __m512i pair_words(const float* lo, const float* hi, index_t t, index_t count) {
  const index_t left = count - t;
  const __mmask16 m = lanes(left);
  const __m512 low = _mm512_maskz_loadu_ps(m, lo + t);
  const __m512 high = hi != nullptr ? _mm512_maskz_loadu_ps(m, hi + t) : _mm512_setzero_ps();
  const __m512i halves = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low));
  const __m512i interleave = _mm512_set_epi16(
      31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
      23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, halves);
}

void round_pairs_row(const float* __restrict lo, const float* __restrict hi,
                     std::uint32_t* __restrict out, index_t count) {
  for (index_t t = 0; t < count; t += 16)
    _mm512_mask_storeu_epi32(out + t, lanes(count - t), pair_words(lo, hi, t, count));
}

void round_pairs_panels_row(const float* __restrict lo, const float* __restrict hi,
                            index_t count, std::uint32_t* __restrict out, index_t panel_stride) {
  static_assert(kRowPanel == 32, "a run is two vectors of words");
  for (index_t j0 = 0; j0 < count; j0 += kRowPanel, out += panel_stride) {
    _mm512_storeu_si512(out, pair_words(lo, hi, j0, count));
    _mm512_storeu_si512(out + 16, pair_words(lo, hi, j0 + 16, count));
  }
}

}  // namespace

RowOps row_ops_avx512_bf16() {
  RowOps ops = row_ops_avx512();
  ops.round_to_bf16 = &round_to_bf16_row;
  ops.round_operand = &round_operand_row;
  ops.round_pairs = &round_pairs_row;
  ops.round_pairs_panels = &round_pairs_panels_row;
  return ops;
}

}  // namespace densekit::lowp
