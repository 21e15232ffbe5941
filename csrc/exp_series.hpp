// The constants of exp(x) = 2^n e^r, n = round(x / ln 2), r = x - n ln2_hi - n ln2_lo
// (ln 2 in two parts, n ln2_hi exact), e^r = 1 + r + r^2 P(r) with P's coefficients highest
// degree first, for vector_exp (vecmath/vector_exp.inc), the one exp of the activations and
// the losses.
#pragma once

namespace densekit {

// -126 ln 2: below it float32 exp is subnormal, and vector_exp returns 0.
constexpr float kExpNormalLimit = -87.33654475f;
// -1022 ln 2 (rounded up by 1e-12: exp there is normal by a margin far above its error): the
// same for float64.
constexpr double kExpNormalLimit64 = -708.396418532263;

template <typename T>
struct ExpSeries;

// Cephes's expf: P of degree 5 on |r| <= ln 2 / 2, ~1 ulp.
template <>
struct ExpSeries<float> {
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr int kTerms = 6;
  static constexpr float kP[kTerms] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                       4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
};

// e^r's Taylor series to r^13 / 13! (on |r| <= ln 2 / 2 the remainder is below 0.05 ulp).
template <>
struct ExpSeries<double> {
  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr int kTerms = 12;
  static constexpr double kP[kTerms] = {
      1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
      1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,      1.0 / 720.0,
      1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,         1.0 / 2.0};
};

}  // namespace densekit
