// The vector math of each ISA, built on first use, and the entry points on the ISA in use.
#include "vecmath.hpp"

namespace densekit::vecmath {

template <>
const VectorMath<float>& vector_math<float>(gemm::Isa isa) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  if (isa == gemm::Isa::avx512) {
    static const VectorMath<float> avx512 = avx512_vector_math_f32();
    return avx512;
  }
  if (isa == gemm::Isa::avx2) {
    static const VectorMath<float> avx2 = avx2_vector_math_f32();
    return avx2;
  }
#endif
  (void)isa;
  static const VectorMath<float> portable{};
  return portable;
}

template <>
const VectorMath<double>& vector_math<double>(gemm::Isa isa) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  if (isa == gemm::Isa::avx512) {
    static const VectorMath<double> avx512 = avx512_vector_math_f64();
    return avx512;
  }
  if (isa == gemm::Isa::avx2) {
    static const VectorMath<double> avx2 = avx2_vector_math_f64();
    return avx2;
  }
#endif
  (void)isa;
  static const VectorMath<double> portable{};
  return portable;
}

// Calls the table entry `entry` of the ISA's vector math with args; false, nothing called,
// where that ISA has none (a null entry).
template <typename T, typename Entry, typename... Args>
bool call_entry(gemm::Isa isa, Entry VectorMath<T>::*entry, Args... args) {
  const Entry function = vector_math<T>(isa).*entry;
  if (function == nullptr) return false;
  function(args...);
  return true;
}

template <typename T>
bool vector_activation_with_isa(gemm::Isa isa, T* out, const T* dy, const T* z, index_t count,
                                const Activation& act) {
  const VectorMath<T>& math = vector_math<T>(isa);
  if (math.apply == nullptr || !has_vector_math(act.kind)) return false;
  const T alpha = static_cast<T>(act.alpha);
  if (dy == nullptr)
    math.apply(out, z, count, act.kind, alpha);
  else
    math.derivative(out, dy, z, count, act.kind, alpha);
  return true;
}

template <typename T>
bool vector_activation(T* out, const T* dy, const T* z, index_t count, const Activation& act) {
  return vector_activation_with_isa(gemm::isa_choice().isa, out, dy, z, count, act);
}

template <typename T>
bool vector_positive_slopes_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* y,
                                     index_t count, T slope) {
  return call_entry<T>(isa, &VectorMath<T>::positive_slopes, dz, dy, y, count, slope);
}

template <typename T>
bool vector_positive_slopes(T* dz, const T* dy, const T* y, index_t count, T slope) {
  return vector_positive_slopes_with_isa(gemm::isa_choice().isa, dz, dy, y, count, slope);
}

template <typename T>
bool vector_relu_with_isa(gemm::Isa isa, T* y, const T* z, index_t count, T cap, T slope,
                          T threshold) {
  return call_entry<T>(isa, &VectorMath<T>::relu, y, z, count, cap, slope, threshold);
}

template <typename T>
bool vector_relu(T* y, const T* z, index_t count, T cap, T slope, T threshold) {
  return vector_relu_with_isa(gemm::isa_choice().isa, y, z, count, cap, slope, threshold);
}

template <typename T>
bool vector_relu_backward_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* z, index_t count,
                                   T cap, T slope, T threshold) {
  return call_entry<T>(isa, &VectorMath<T>::relu_backward, dz, dy, z, count, cap, slope,
                       threshold);
}

template <typename T>
bool vector_relu_backward(T* dz, const T* dy, const T* z, index_t count, T cap, T slope,
                          T threshold) {
  return vector_relu_backward_with_isa(gemm::isa_choice().isa, dz, dy, z, count, cap, slope,
                                       threshold);
}

template <typename T>
bool vector_column_sums_with_isa(gemm::Isa isa, double* sums, const T* rows, index_t n,
                                 index_t cols, index_t ld) {
  return call_entry<T>(isa, &VectorMath<T>::column_sums, sums, rows, n, cols, ld);
}

template <typename T>
bool vector_column_sums(double* sums, const T* rows, index_t n, index_t cols, index_t ld) {
  return vector_column_sums_with_isa(gemm::isa_choice().isa, sums, rows, n, cols, ld);
}

template <typename T>
bool vector_softmax_with_isa(gemm::Isa isa, T* out, const T* in, index_t rows, index_t cols,
                             index_t ld) {
  return call_entry<T>(isa, &VectorMath<T>::softmax, out, in, rows, cols, ld);
}

template <typename T>
bool vector_softmax(T* out, const T* in, index_t rows, index_t cols, index_t ld) {
  return vector_softmax_with_isa(gemm::isa_choice().isa, out, in, rows, cols, ld);
}

template <typename T>
bool vector_log_softmax_with_isa(gemm::Isa isa, T* out, const T* in, index_t rows, index_t cols,
                                 index_t ld) {
  return call_entry<T>(isa, &VectorMath<T>::log_softmax, out, in, rows, cols, ld);
}

template <typename T>
bool vector_log_softmax(T* out, const T* in, index_t rows, index_t cols, index_t ld) {
  return vector_log_softmax_with_isa(gemm::isa_choice().isa, out, in, rows, cols, ld);
}

template <typename T>
bool vector_softmax_backward_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* p,
                                      index_t rows, index_t cols, index_t ld) {
  return call_entry<T>(isa, &VectorMath<T>::softmax_backward, dz, dy, p, rows, cols, ld);
}

template <typename T>
bool vector_softmax_backward(T* dz, const T* dy, const T* p, index_t rows, index_t cols,
                             index_t ld) {
  return vector_softmax_backward_with_isa(gemm::isa_choice().isa, dz, dy, p, rows, cols, ld);
}

template <typename T>
bool vector_log_softmax_backward_with_isa(gemm::Isa isa, T* dz, const T* dy, const T* y,
                                          index_t rows, index_t cols, index_t ld) {
  return call_entry<T>(isa, &VectorMath<T>::log_softmax_backward, dz, dy, y, rows, cols, ld);
}

template <typename T>
bool vector_log_softmax_backward(T* dz, const T* dy, const T* y, index_t rows, index_t cols,
                                 index_t ld) {
  return vector_log_softmax_backward_with_isa(gemm::isa_choice().isa, dz, dy, y, rows, cols, ld);
}

#define DENSEKIT_INSTANTIATE(T)                                                              \
  template bool vector_activation<T>(T*, const T*, const T*, index_t, const Activation&);   \
  template bool vector_activation_with_isa<T>(gemm::Isa, T*, const T*, const T*, index_t,  \
                                              const Activation&);                           \
  template bool vector_softmax<T>(T*, const T*, index_t, index_t, index_t);                \
  template bool vector_softmax_with_isa<T>(gemm::Isa, T*, const T*, index_t, index_t, index_t); \
  template bool vector_log_softmax<T>(T*, const T*, index_t, index_t, index_t);            \
  template bool vector_log_softmax_with_isa<T>(gemm::Isa, T*, const T*, index_t, index_t,  \
                                               index_t);                                   \
  template bool vector_positive_slopes<T>(T*, const T*, const T*, index_t, T);               \
  template bool vector_positive_slopes_with_isa<T>(gemm::Isa, T*, const T*, const T*, index_t, \
                                                   T);                                       \
  template bool vector_relu<T>(T*, const T*, index_t, T, T, T);                             \
  template bool vector_relu_with_isa<T>(gemm::Isa, T*, const T*, index_t, T, T, T);         \
  template bool vector_relu_backward<T>(T*, const T*, const T*, index_t, T, T, T);          \
  template bool vector_relu_backward_with_isa<T>(gemm::Isa, T*, const T*, const T*, index_t, T, \
                                                 T, T);                                      \
  template bool vector_column_sums<T>(double*, const T*, index_t, index_t, index_t);         \
  template bool vector_softmax_backward<T>(T*, const T*, const T*, index_t, index_t, index_t); \
  template bool vector_softmax_backward_with_isa<T>(gemm::Isa, T*, const T*, const T*, index_t, \
                                                    index_t, index_t);                       \
  template bool vector_log_softmax_backward<T>(T*, const T*, const T*, index_t, index_t,     \
                                               index_t);                                     \
  template bool vector_log_softmax_backward_with_isa<T>(gemm::Isa, T*, const T*, const T*,   \
                                                        index_t, index_t, index_t);          \
  template bool vector_column_sums_with_isa<T>(gemm::Isa, double*, const T*, index_t, index_t, \
                                               index_t);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit::vecmath
