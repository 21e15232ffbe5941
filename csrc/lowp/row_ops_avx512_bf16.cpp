// The row operations (row_ops.inc) built for the avx512 ISA with AVX512-BF16 (this file alone
// has those flags): the bf16 roundings then run on its conversion instruction (vcvtne2ps2bf16,
// 32 floats an instruction where the integer rounding takes about ten per 16 and is bound by
// the two vector ports). The exact rounding (round_to_bf16: outputs, to_bfloat16) keeps every
// bit, subnormals by integers; the operand roundings (round_operand, round_pairs,
// round_pairs_panels) may turn a subnormal into a zero, which every product reads it as
// (bf16_gemm.hpp), so a product's bits are those of the exactly rounded operands. row_ops()
// picks this set where the bf16 path uses AVX512-BF16's instructions.
#define DENSEKIT_ROW_OPS_AVX512_NAME row_ops_avx512_bf16
#include "lowp/row_ops_avx512.cpp"
