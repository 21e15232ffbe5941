// AVX-512F microkernels. This file alone is compiled with -mavx512f -mavx2 -mfma; it is
// entered only after the CPU check in isa.cpp.
//   float32: 14x32 (28 zmm accumulators; per k step 2 vector loads of B, 14 broadcasts of A)
//            and, for m <= 4 (batch 1..4), m x 128 (m <= 3) or 4x96: wide rows of B read
//            contiguously, >= 8 independent fma chains.
//   float64: 14x16, m x 64, 4x48: the same shapes in vectors.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized and -Wuninitialized (GCC bug 105593:
// _mm512_undefined_ps) in their own shuffle/max/min/scalef wrappers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <utility>

#include "microkernels.hpp"

namespace densekit::gemm {
namespace {

inline __mmask16 mask16(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline __mmask8 mask8(int n) { return static_cast<__mmask8>((1u << n) - 1u); }
// Lanes lo <= i < hi.
inline __mmask16 mask16(int lo, int hi) {
  return static_cast<__mmask16>(mask16(hi) & ~mask16(lo));
}
inline __mmask8 mask8(int lo, int hi) { return static_cast<__mmask8>(mask8(hi) & ~mask8(lo)); }

struct F32x16 {
  using T = float;
  using R = __m512;
  static constexpr int W = 16;
  static constexpr bool kVectorMath = true;
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R abs(R v) {
    return _mm512_castsi512_ps(
        _mm512_and_epi32(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
  }
  // vector_exp's primitives (microkernel_body.inc): v, or 0 where x < limit (NaN kept);
  // min returning its second operand for NaN; round to nearest; y 2^n.
  static R zero_below(R v, R x, R limit) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, limit, _CMP_NLT_UQ), v);
  }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R round(R v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static R scale_pow2(R y, R n) { return _mm512_scalef_ps(y, n); }
  static void pin(R& v) { __asm__("" : "+v"(v)); }
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static R load_part(const T* p, int n) { return _mm512_maskz_loadu_ps(mask16(n), p); }
  static void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  static void store_part(T* p, R v, int n) { _mm512_mask_storeu_ps(p, mask16(n), v); }
  static R load_lanes(const T* p, int lo, int hi) {
    return _mm512_maskz_loadu_ps(mask16(lo, hi), p);
  }
  static void store_lanes(T* p, R v, int lo, int hi) {
    _mm512_mask_storeu_ps(p, mask16(lo, hi), v);
  }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static T reduce_add(R v) {
    const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(v),
                                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
  }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R select_positive(R f, R a, R b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(f, zero(), _CMP_GT_OQ), b, a);
  }
  static void add_to(double* sums, R v) {
    const __m512d low = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d high =
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    _mm512_storeu_pd(sums, _mm512_add_pd(_mm512_loadu_pd(sums), low));
    _mm512_storeu_pd(sums + 8, _mm512_add_pd(_mm512_loadu_pd(sums + 8), high));
  }
  // v > 0 or NaN ? v : +0, as scalar::relu (NaN kept, -0 gives +0).
  static R relu(R v) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero(), _CMP_NLE_UQ), v); }
  static R leaky(R v, R alpha) {
    const __mmask16 positive = _mm512_cmp_ps_mask(v, zero(), _CMP_GT_OQ);
    return _mm512_mask_blend_ps(positive, _mm512_mul_ps(v, alpha), v);
  }
  static void transpose(R (&r)[16]) {
    R t[16];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // u[4g + c], 128-bit lane L: rows 4g..4g+3 at column 4L + c.
    R u[16];
    for (int g = 0; g < 16; g += 4) {
      u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
      u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
      u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
      u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
      const R v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
      const R w0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
      const R v1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
      const R w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
      r[c] = _mm512_shuffle_f32x4(v0, v1, 0x88);
      r[8 + c] = _mm512_shuffle_f32x4(v0, v1, 0xDD);
      r[4 + c] = _mm512_shuffle_f32x4(w0, w1, 0x88);
      r[12 + c] = _mm512_shuffle_f32x4(w0, w1, 0xDD);
    }
  }
};

struct F64x8 {
  using T = double;
  using R = __m512d;
  static constexpr int W = 8;
  static constexpr bool kVectorMath = true;
  static R div(R a, R b) { return _mm512_div_pd(a, b); }
  static R abs(R v) {
    return _mm512_castsi512_pd(
        _mm512_and_epi64(_mm512_castpd_si512(v), _mm512_set1_epi64(0x7fffffffffffffffLL)));
  }
  static R zero_below(R v, R x, R limit) {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, limit, _CMP_NLT_UQ), v);
  }
  static R min(R a, R b) { return _mm512_min_pd(a, b); }
  static R round(R v) {
    return _mm512_roundscale_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static R scale_pow2(R y, R n) { return _mm512_scalef_pd(y, n); }
  static void pin(R& v) { __asm__("" : "+v"(v)); }
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const T* p) { return _mm512_loadu_pd(p); }
  static R load_part(const T* p, int n) { return _mm512_maskz_loadu_pd(mask8(n), p); }
  static void store(T* p, R v) { _mm512_storeu_pd(p, v); }
  static void store_part(T* p, R v, int n) { _mm512_mask_storeu_pd(p, mask8(n), v); }
  static R load_lanes(const T* p, int lo, int hi) {
    return _mm512_maskz_loadu_pd(mask8(lo, hi), p);
  }
  static void store_lanes(T* p, R v, int lo, int hi) {
    _mm512_mask_storeu_pd(p, mask8(lo, hi), v);
  }
  static R set1(T x) { return _mm512_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static T reduce_add(R v) {
    const __m256d half = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
    const __m128d x = _mm_add_pd(_mm256_castpd256_pd128(half), _mm256_extractf128_pd(half, 1));
    return _mm_cvtsd_f64(_mm_add_sd(x, _mm_unpackhi_pd(x, x)));
  }
  static R sub(R a, R b) { return _mm512_sub_pd(a, b); }
  static R select_positive(R f, R a, R b) {
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(f, zero(), _CMP_GT_OQ), b, a);
  }
  static void add_to(double* sums, R v) {
    _mm512_storeu_pd(sums, _mm512_add_pd(_mm512_loadu_pd(sums), v));
  }
  static R relu(R v) { return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(v, zero(), _CMP_NLE_UQ), v); }
  static R leaky(R v, R alpha) {
    const __mmask8 positive = _mm512_cmp_pd_mask(v, zero(), _CMP_GT_OQ);
    return _mm512_mask_blend_pd(positive, _mm512_mul_pd(v, alpha), v);
  }
  static void transpose(R (&r)[8]) {
    R t[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    // s[4h + c]: rows 4h..4h+3 at columns c (lanes 0-1, 4-5 of pairs) and c + 4.
    R s[8];
    for (int h = 0; h < 8; h += 4) {
      s[h] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0x88);
      s[h + 1] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0x88);
      s[h + 2] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0xDD);
      s[h + 3] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0xDD);
    }
    for (int c = 0; c < 4; ++c) {
      r[c] = _mm512_shuffle_f64x2(s[c], s[4 + c], 0x88);
      r[c + 4] = _mm512_shuffle_f64x2(s[c], s[4 + c], 0xDD);
    }
  }
};

#include "microkernel_body.inc"

}  // namespace

KernelFamily<float> avx512_kernels_f32() {
  return make_family<F32x16, 14, 2, 4, 32>(Isa::avx512, "avx512 14x32");
}

KernelFamily<double> avx512_kernels_f64() {
  return make_family<F64x8, 14, 2, 4, 32>(Isa::avx512, "avx512 14x16");
}

}  // namespace densekit::gemm
