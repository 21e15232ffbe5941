// AVX2+FMA microkernels. This file alone is compiled with -mavx2 -mfma; it is entered only
// after the CPU check in isa.cpp.
//   float32: 6x16 (12 ymm accumulators, 2 loads of B and 6 broadcasts of A per k step), and
//            for m <= 4: 1x64, 2x40, 3x32, 4x24 (see TileTable::wide_nv).
//   float64: 6x8, and 1x32 .. 4x12.
#include <immintrin.h>

#include <utility>

#include "microkernels.hpp"

namespace densekit::gemm {
namespace {

// Lane i is selected when i < n (the sign bit of each 32/64-bit lane drives maskload).
inline __m256i mask_epi32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i mask_epi64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
// Lanes lo <= i < hi.
inline __m256i mask_epi32(int lo, int hi) {
  return _mm256_andnot_si256(mask_epi32(lo), mask_epi32(hi));
}
inline __m256i mask_epi64(int lo, int hi) {
  return _mm256_andnot_si256(mask_epi64(lo), mask_epi64(hi));
}

struct F32x8 {
  using T = float;
  using R = __m256;
  static constexpr int W = 8;
  static constexpr bool kVectorMath = true;
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R abs(R v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
  // vector_exp's primitives (microkernel_body.inc), as in kernels_avx512.cpp; y 2^n as two
  // factors 2^(n/2), each normal (n reaches 128).
  static R zero_below(R v, R x, R limit) {
    return _mm256_and_ps(_mm256_cmp_ps(x, limit, _CMP_NLT_UQ), v);
  }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R round(R v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R scale_pow2(R y, R n) {
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    const __m256i rest = _mm256_sub_epi32(ni, half);
    const __m256i bias = _mm256_set1_epi32(127);
    const R f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
    const R f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, f1), f2);
  }
  static void pin(R& v) { __asm__("" : "+v"(v)); }
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static R load_part(const T* p, int n) { return _mm256_maskload_ps(p, mask_epi32(n)); }
  static void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  static void store_part(T* p, R v, int n) { _mm256_maskstore_ps(p, mask_epi32(n), v); }
  static R load_lanes(const T* p, int lo, int hi) {
    return _mm256_maskload_ps(p, mask_epi32(lo, hi));
  }
  static void store_lanes(T* p, R v, int lo, int hi) {
    _mm256_maskstore_ps(p, mask_epi32(lo, hi), v);
  }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static T reduce_add(R v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
  }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R select_positive(R f, R a, R b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(f, zero(), _CMP_GT_OQ));
  }
  static void add_to(double* sums, R v) {
    const __m256d low = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d high = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    _mm256_storeu_pd(sums, _mm256_add_pd(_mm256_loadu_pd(sums), low));
    _mm256_storeu_pd(sums + 4, _mm256_add_pd(_mm256_loadu_pd(sums + 4), high));
  }
  // v > 0 or NaN ? v : +0, as scalar::relu (NaN kept, -0 gives +0).
  static R relu(R v) { return _mm256_and_ps(v, _mm256_cmp_ps(v, zero(), _CMP_NLE_UQ)); }
  static R leaky(R v, R alpha) {
    const R positive = _mm256_cmp_ps(v, zero(), _CMP_GT_OQ);
    return _mm256_blendv_ps(_mm256_mul_ps(v, alpha), v, positive);
  }
  static void transpose(R (&r)[8]) {
    R t[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    // u[4g + c], 128-bit lane L: rows 4g..4g+3 at column 4L + c.
    R u[8];
    for (int g = 0; g < 8; g += 4) {
      u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
      u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
      u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
      u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
      r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
      r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
  }
};

struct F64x4 {
  using T = double;
  using R = __m256d;
  static constexpr int W = 4;
  static constexpr bool kVectorMath = true;
  static R div(R a, R b) { return _mm256_div_pd(a, b); }
  static R abs(R v) {
    return _mm256_and_pd(v, _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL)));
  }
  static R zero_below(R v, R x, R limit) {
    return _mm256_and_pd(_mm256_cmp_pd(x, limit, _CMP_NLT_UQ), v);
  }
  static R min(R a, R b) { return _mm256_min_pd(a, b); }
  static R round(R v) { return _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // y 2^n from n's exponent bits (-1022 <= n <= 1023 after vector_exp's clamps).
  static R scale_pow2(R y, R n) {
    const __m256i ni = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n));
    return _mm256_mul_pd(y, _mm256_castsi256_pd(_mm256_slli_epi64(
                                _mm256_add_epi64(ni, _mm256_set1_epi64x(1023)), 52)));
  }
  static void pin(R& v) { __asm__("" : "+v"(v)); }
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const T* p) { return _mm256_loadu_pd(p); }
  static R load_part(const T* p, int n) { return _mm256_maskload_pd(p, mask_epi64(n)); }
  static void store(T* p, R v) { _mm256_storeu_pd(p, v); }
  static void store_part(T* p, R v, int n) { _mm256_maskstore_pd(p, mask_epi64(n), v); }
  static R load_lanes(const T* p, int lo, int hi) {
    return _mm256_maskload_pd(p, mask_epi64(lo, hi));
  }
  static void store_lanes(T* p, R v, int lo, int hi) {
    _mm256_maskstore_pd(p, mask_epi64(lo, hi), v);
  }
  static R set1(T x) { return _mm256_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static T reduce_add(R v) {
    const __m128d x = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(x, _mm_unpackhi_pd(x, x)));
  }
  static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
  static R select_positive(R f, R a, R b) {
    return _mm256_blendv_pd(b, a, _mm256_cmp_pd(f, zero(), _CMP_GT_OQ));
  }
  static void add_to(double* sums, R v) {
    _mm256_storeu_pd(sums, _mm256_add_pd(_mm256_loadu_pd(sums), v));
  }
  static R relu(R v) { return _mm256_and_pd(v, _mm256_cmp_pd(v, zero(), _CMP_NLE_UQ)); }
  static R leaky(R v, R alpha) {
    const R positive = _mm256_cmp_pd(v, zero(), _CMP_GT_OQ);
    return _mm256_blendv_pd(_mm256_mul_pd(v, alpha), v, positive);
  }
  static void transpose(R (&r)[4]) {
    const R t0 = _mm256_unpacklo_pd(r[0], r[1]);
    const R t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const R t2 = _mm256_unpacklo_pd(r[2], r[3]);
    const R t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
};

#include "microkernel_body.inc"

}  // namespace

KernelFamily<float> avx2_kernels_f32() {
  return make_family<F32x8, 6, 2, 4, 16>(Isa::avx2, "avx2 6x16");
}

KernelFamily<double> avx2_kernels_f64() {
  return make_family<F64x4, 6, 2, 4, 16>(Isa::avx2, "avx2 6x8");
}

}  // namespace densekit::gemm
