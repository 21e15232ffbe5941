// The normalization row loops at the baseline ISA (no ISA flags): the fallback on any CPU.
#include "normalization_rows.hpp"

namespace densekit {
namespace {

#include "normalization_rows.inc"

}  // namespace

NormalizationRows<float> portable_normalization_rows_f32() { return make_normalization_rows<float>(); }
NormalizationRows<double> portable_normalization_rows_f64() { return make_normalization_rows<double>(); }

}  // namespace densekit
