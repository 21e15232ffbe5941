// The AVX-512F vector math. This file alone (with gemm/kernels_avx512.cpp) is compiled with
// -mavx512f -mavx2 -mfma; it is entered only after the CPU check in gemm/isa.cpp.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized and -Wuninitialized (GCC bug 105593:
// _mm512_undefined_ps) in their own shuffle/max/min/scalef wrappers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <limits>

#include "exp_series.hpp"
#include "scalar_activations.hpp"
#include "vecmath.hpp"

namespace densekit::vecmath {
namespace {

#include "vectors_avx512.inc"

#include "vector_math.inc"

}  // namespace

VectorMath<float> avx512_vector_math_f32() { return make_vector_math<F32x16>(gemm::Isa::avx512); }
VectorMath<double> avx512_vector_math_f64() { return make_vector_math<F64x8>(gemm::Isa::avx512); }

}  // namespace densekit::vecmath
