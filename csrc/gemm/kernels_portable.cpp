// Portable microkernels: the baseline ISA only (SSE2 on x86-64), through GCC/Clang vector
// extensions where available. No fma: each step rounds the product, then the sum
// (-ffp-contract=off keeps the compiler from fusing them). The fallback on any CPU.
//   float32: 6x8 (two 4-lane vectors per row), 1x32 .. 4x12 for m <= 4; float64: 6x4, 1x16 ..
#include <utility>

#include "microkernels.hpp"

namespace densekit::gemm {
namespace {

template <typename Scalar, int Lanes>
struct Portable {
  using T = Scalar;
#if defined(__GNUC__)
  typedef Scalar R __attribute__((vector_size(sizeof(Scalar) * Lanes)));
#else
  struct R {
    Scalar v[Lanes];
    Scalar& operator[](int i) { return v[i]; }
    Scalar operator[](int i) const { return v[i]; }
  };
#endif
  static constexpr int W = Lanes;
  static constexpr bool kVectorMath = false;  // activations use scalar::forward
  static void pin(R&) {}
  static R zero() {
    R r;
    for (int i = 0; i < W; ++i) r[i] = T(0);
    return r;
  }
  static R load(const T* p) {
    R r;
    for (int i = 0; i < W; ++i) r[i] = p[i];
    return r;
  }
  static R load_part(const T* p, int n) {
    R r = zero();
    for (int i = 0; i < n; ++i) r[i] = p[i];
    return r;
  }
  static void store(T* p, R v) {
    for (int i = 0; i < W; ++i) p[i] = v[i];
  }
  static void store_part(T* p, R v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  static R load_lanes(const T* p, int lo, int hi) {
    R r = zero();
    for (int i = lo; i < hi; ++i) r[i] = p[i];
    return r;
  }
  static void store_lanes(T* p, R v, int lo, int hi) {
    for (int i = lo; i < hi; ++i) p[i] = v[i];
  }
  static R set1(T x) {
    R r;
    for (int i = 0; i < W; ++i) r[i] = x;
    return r;
  }
  static R fma(R a, R b, R c) {
#if defined(__GNUC__)
    return c + a * b;
#else
    R r;
    for (int i = 0; i < W; ++i) r[i] = c[i] + a[i] * b[i];
    return r;
#endif
  }
  static R add(R a, R b) {
    R r;
    for (int i = 0; i < W; ++i) r[i] = a[i] + b[i];
    return r;
  }
  static R mul(R a, R b) {
    R r;
    for (int i = 0; i < W; ++i) r[i] = a[i] * b[i];
    return r;
  }
  static R sub(R a, R b) {
    R r;
    for (int i = 0; i < W; ++i) r[i] = a[i] - b[i];
    return r;
  }
  static R select_positive(R f, R a, R b) {
    R r;
    for (int i = 0; i < W; ++i) r[i] = f[i] > T(0) ? a[i] : b[i];
    return r;
  }
  static T reduce_add(R v) {
    T total = v[0];
    for (int i = 1; i < W; ++i) total += v[i];
    return total;
  }
  static void add_to(double* sums, R v) {
    for (int i = 0; i < W; ++i) sums[i] += static_cast<double>(v[i]);
  }
  static R relu(R v) {
    for (int i = 0; i < W; ++i) v[i] = v[i] > T(0) || v[i] != v[i] ? v[i] : T(0);
    return v;
  }
  static R leaky(R v, R alpha) {
    for (int i = 0; i < W; ++i) v[i] = v[i] > T(0) ? v[i] : alpha[i] * v[i];
    return v;
  }
  static void transpose(R (&r)[W]) {
    T cells[W][W];
    for (int i = 0; i < W; ++i)
      for (int j = 0; j < W; ++j) cells[j][i] = r[i][j];
    for (int i = 0; i < W; ++i)
      for (int j = 0; j < W; ++j) r[i][j] = cells[i][j];
  }
};

#include "microkernel_body.inc"

}  // namespace

KernelFamily<float> portable_kernels_f32() {
  return make_family<Portable<float, 4>, 6, 2, 4, 16>(Isa::portable, "portable 6x8");
}

KernelFamily<double> portable_kernels_f64() {
  return make_family<Portable<double, 2>, 6, 2, 4, 16>(Isa::portable, "portable 6x4");
}

}  // namespace densekit::gemm
