// The vector-math layer: elementwise activations, their derivatives and row softmax over a
// vector type per ISA (vector_math.inc), each ISA in its own translation unit with that ISA's
// flags (vector_math_avx512.cpp, vector_math_avx2.cpp), chosen by the same one ISA choice as
// the matrix-product engine (gemm/isa.hpp). Sits below the kernel families and the engine:
// it includes neither.
#pragma once

#include "activation_table.hpp"
#include "common.hpp"
#include "gemm/isa.hpp"

namespace densekit::vecmath {

// One ISA's vector math for T; the functions are null where it has none (the portable ISA).
template <typename T>
struct VectorMath {
  gemm::Isa isa = gemm::Isa::portable;
  // y[i] = f(z[i]) for i < count (y may be z).
  void (*apply)(T* y, const T* z, index_t count, ActivationKind kind, T alpha) = nullptr;
  // Softmax of rows x cols of (in, ld) into (out, ld); out may be in.
  void (*softmax)(T* out, const T* in, index_t rows, index_t cols, index_t ld) = nullptr;
  // Log-softmax likewise.
  void (*log_softmax)(T* out, const T* in, index_t rows, index_t cols, index_t ld) = nullptr;
  // Softmax's backward over rows x cols (dz, dy, p with leading dimension ld; p softmax's
  // output, dz may be dy): dz = p * (dy - sum(dy * p)) per row.
  void (*softmax_backward)(T* dz, const T* dy, const T* p, index_t rows, index_t cols,
                           index_t ld) = nullptr;
  // Log-softmax's backward likewise from its output y: dz = dy - exp(y) * sum(dy) per row.
  void (*log_softmax_backward)(T* dz, const T* dy, const T* y, index_t rows, index_t cols,
                               index_t ld) = nullptr;
  // dz[i] = dy[i] * f'(z[i]) for i < count.
  void (*derivative)(T* dz, const T* dy, const T* z, index_t count, ActivationKind kind,
                     T alpha) = nullptr;
  // dz[i] = dy[i] * (y[i] > 0 ? 1 : slope), y > 0 on its bits (vector_positive_slopes).
  void (*positive_slopes)(T* dz, const T* dy, const T* y, index_t count, T slope) = nullptr;
  // y[i] = scalar::relu_parametric(z[i], cap, slope, threshold) (vector_relu).
  void (*relu)(T* y, const T* z, index_t count, T cap, T slope, T threshold) = nullptr;
  // dz[i] = dy[i] * scalar::relu_parametric_derivative(z[i], ...) (vector_relu_backward).
  void (*relu_backward)(T* dz, const T* dy, const T* z, index_t count, T cap, T slope,
                        T threshold) = nullptr;
  // sums[j] += rows[r * ld + j] in double over r < n in order (vector_column_sums).
  void (*column_sums)(double* sums, const T* rows, index_t n, index_t cols, index_t ld) = nullptr;
};

#if defined(DENSEKIT_HAVE_X86_KERNELS)
VectorMath<float> avx2_vector_math_f32();
VectorMath<double> avx2_vector_math_f64();
VectorMath<float> avx512_vector_math_f32();
VectorMath<double> avx512_vector_math_f64();
#endif

// The vector math of an ISA, built on first use; only an ISA the CPU supports may be asked
// for (building it runs code compiled with that ISA's flags).
template <typename T>
const VectorMath<T>& vector_math(gemm::Isa isa);

// With the vector math of the ISA in use (every activation whose table row has vector_math;
// within a few ulp of scalar::forward / scalar::derivative_from_z; no subnormal made where the
// result is normal), over `count` contiguous elements:
//   dy == nullptr: out[i] = f(z[i]) (out may be z);
//   else:          out[i] = dy[i] * f'(z[i]), f' from the pre-activation.
// Returns false, and writes nothing, where that ISA has none for T and this activation.
// vector_activation_with_isa: a given ISA (tests; it must be supported).
template <typename T>
bool vector_activation(T* out, const T* dy, const T* z, index_t count, const Activation& act);
template <typename T>
bool vector_activation_with_isa(gemm::Isa isa, T* out, const T* dy, const T* z, index_t count,
                                const Activation& act);

// dz[i] = dy[i] * (y[i] > 0 ? 1 : slope) for i < count, y > 0 tested on y's bits (0 < bits <=
// +inf's: NaN and zeros take the slope, subnormals count whatever MXCSR says): the
// derivative of relu (slope 0) and leaky_relu from the output or the pre-activation, and
// leaky_relu itself (dy = y). The bits of the scalar loop. False, nothing written, where the
// ISA has none.
template <typename T>
bool vector_positive_slopes(T* dz, const T* dy, const T* y, index_t count, T slope);
template <typename T>
bool vector_positive_slopes_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* y,
                                     index_t count, T slope);

// y[i] = scalar::relu_parametric(z[i], cap, slope, threshold) for i < count (y may be z), in
// the ISA's vectors: the same bits. False, nothing written, where the ISA has none.
template <typename T>
bool vector_relu(T* y, const T* z, index_t count, T cap, T slope, T threshold);
template <typename T>
bool vector_relu_with_isa(gemm::Isa isa, T* y, const T* z, index_t count, T cap, T slope,
                          T threshold);

// dz[i] = dy[i] * scalar::relu_parametric_derivative(z[i], cap, slope, threshold) for i <
// count (dz may be dy), in the ISA's vectors: the same bits. False, nothing written, where the
// ISA has none.
template <typename T>
bool vector_relu_backward(T* dz, const T* dy, const T* z, index_t count, T cap, T slope,
                          T threshold);
template <typename T>
bool vector_relu_backward_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* z, index_t count,
                                   T cap, T slope, T threshold);

// sums[j] += rows[r * ld + j] in double for j < cols, over rows r < n in increasing order (a
// bias gradient's column sums): each sum the scalar loop's chain, the same bits. False,
// nothing added, where the ISA has none.
template <typename T>
bool vector_column_sums(double* sums, const T* rows, index_t n, index_t cols, index_t ld);
template <typename T>
bool vector_column_sums_with_isa(gemm::Isa isa, double* sums, const T* rows, index_t n,
                                 index_t cols, index_t ld);

// Softmax of rows x cols of (in, ld) into (out, ld) (out may be in) with the vector math of
// the ISA in use (vector_exp, lane sums); false, and nothing written, where it has none for T.
template <typename T>
bool vector_softmax(T* out, const T* in, index_t rows, index_t cols, index_t ld);
template <typename T>
bool vector_softmax_with_isa(gemm::Isa isa, T* out, const T* in, index_t rows, index_t cols,
                             index_t ld);

// Log-softmax likewise: (z - max) - log(sum exp(z - max)) per row.
template <typename T>
bool vector_log_softmax(T* out, const T* in, index_t rows, index_t cols, index_t ld);
template <typename T>
bool vector_log_softmax_with_isa(gemm::Isa isa, T* out, const T* in, index_t rows, index_t cols,
                                 index_t ld);

// The backward of softmax (p its output) and of log-softmax (y its output) over rows x cols
// (leading dimension ld; dz may be dy) with the vector math of the ISA in use: each row's sum
// (of dy * p, of dy) in vector lanes, then reduce_add's tree, so a row's bits depend on the
// ISA only, not on the thread count; exp(y) by vector_exp as the exponential activation. False,
// nothing written, where it has none for T.
template <typename T>
bool vector_softmax_backward(T* dz, const T* dy, const T* p, index_t rows, index_t cols,
                             index_t ld);
template <typename T>
bool vector_softmax_backward_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* p,
                                      index_t rows, index_t cols, index_t ld);
template <typename T>
bool vector_log_softmax_backward(T* dz, const T* dy, const T* y, index_t rows, index_t cols,
                                 index_t ld);
template <typename T>
bool vector_log_softmax_backward_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* y,
                                          index_t rows, index_t cols, index_t ld);

}  // namespace densekit::vecmath
