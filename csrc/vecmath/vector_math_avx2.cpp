// The AVX2+FMA vector math. This file alone (with gemm/kernels_avx2.cpp) is compiled with
// -mavx2 -mfma; it is entered only after the CPU check in gemm/isa.cpp.
#include <immintrin.h>

#include <limits>

#include "exp_series.hpp"
#include "scalar_activations.hpp"
#include "vecmath.hpp"

namespace densekit::vecmath {
namespace {

#include "vectors_avx2.inc"

#include "vector_math.inc"

}  // namespace

VectorMath<float> avx2_vector_math_f32() { return make_vector_math<F32x8>(gemm::Isa::avx2); }
VectorMath<double> avx2_vector_math_f64() { return make_vector_math<F64x4>(gemm::Isa::avx2); }

}  // namespace densekit::vecmath
