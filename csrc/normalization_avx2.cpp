// The normalization row loops for avx2, compiled with -mavx2 -mfma and entered only after the CPU check in gemm/isa.cpp.
#include "normalization_rows.hpp"

namespace densekit {
namespace {

#include "normalization_rows.inc"

}  // namespace

NormalizationRows<float> avx2_normalization_rows_f32() { return make_normalization_rows<float>(); }
NormalizationRows<double> avx2_normalization_rows_f64() { return make_normalization_rows<double>(); }

}  // namespace densekit
