// Dense layers with bf16 products, float32 everywhere else: the compute of Keras's
// "mixed_bfloat16" policy. x is (n, k), w (k, m) the float32 master weights, y (n, m).
//   forward:  y = act(round(x) @ round(w) + b), the product in bf16 with float32 accumulation
//             (gemm_bf16's pair rule), bias and activation in float32;
//   backward: dz = dy * act'(.) in float32; db = column sums of dz (float32, as the float32
//             engine sums them); dw = round(x)^T @ round(dz); dx = round(dz) @ round(w)^T,
//             both products in bf16 with float32 accumulation and float32 results.
// round() is float32 -> bf16 to nearest even, done while each operand is packed, so no bf16
// copy of an activation exists in memory. The results do not depend on the thread count.
#pragma once

#include "activation_table.hpp"
#include "common.hpp"
#include "lowp/bf16_gemm.hpp"

namespace densekit::lowp {

// w (k, m) rounded to bf16 and packed for both products that read it: x @ w (forward) and
// dz @ w^T (backward, packed only when asked). pack_dense_bf16 packs again into the same
// storage: after each optimizer step, the weights' bf16 copy costs no allocation.
struct Bf16DenseWeights {
  index_t k = 0, m = 0;
  PackedBf16 forward;
  PackedBf16 transposed;
  bool has_transposed = false;
};

void pack_dense_bf16(Bf16DenseWeights* out, const float* w, index_t k, index_t m,
                     bool with_transposed, int num_threads);

// preact (n, m) may be null. A row activation (softmax) is applied to y afterwards.
void dense_forward_bf16(float* y, float* preact, const float* x, const Bf16DenseWeights& w,
                        const float* b, index_t n, const Activation& act, int num_threads);

// dx (n, k), dw (k, m), db (m,) may each be null; dx needs w packed with_transposed. y or
// preact as dense_backward takes them; dz lives in scratch memory of the calling thread.
// accumulate adds to dw and db.
void dense_backward_bf16(float* dx, float* dw, float* db, const float* dy, const float* x,
                         const Bf16DenseWeights& w, const float* y, const float* preact,
                         index_t n, const Activation& act, bool accumulate, int num_threads);

}  // namespace densekit::lowp
