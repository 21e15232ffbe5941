// Dense layers with bf16 products, float32 everywhere else: the compute of Keras's
// "mixed_bfloat16" policy. x is (n, k), w (k, m) the float32 master weights, y (n, m).
//   forward:  y = act(round(x) @ round(w) + b), the product in bf16 with float32 accumulation
//             (gemm_bf16's pair rule), bias and activation in float32;
//   backward: dz = dy * act'(.) in float32; db = column sums of dz (float32, as the float32
//             engine sums them); dw = round(x)^T @ round(dz); dx = round(dz) @ round(w)^T,
//             both products in bf16 with float32 accumulation and float32 results.
// round() is float32 -> bf16 to nearest even, done while each operand is packed, so no bf16
// copy of an activation exists in memory. The results do not depend on the thread count.
// x, y, dy and dx may each be bf16 instead (Keras's bf16 activations between layers, torch's
// bf16 tensors): a bf16 x or dy is read as its float32 value, a bf16 y or dx is the float32
// result rounded to nearest even (as a bf16 output of gemm_bf16). round(x) of a bf16 x is x, so
// a bf16 x gives the bits of its float32 widening.
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

// An array of activations or gradients held in float32 or in bf16: one of the two pointers
// set (neither: not given).
struct Bf16Io {
  const float* f32 = nullptr;
  const bf16_bits* b16 = nullptr;
  Bf16Io() = default;
  Bf16Io(const float* p) : f32(p) {}      // NOLINT: a float32 array converts implicitly
  Bf16Io(const bf16_bits* p) : b16(p) {}  // NOLINT: and a bf16 one
  bool given() const { return f32 != nullptr || b16 != nullptr; }
};
struct Bf16IoOut {
  float* f32 = nullptr;
  bf16_bits* b16 = nullptr;
  Bf16IoOut() = default;
  Bf16IoOut(float* p) : f32(p) {}      // NOLINT
  Bf16IoOut(bf16_bits* p) : b16(p) {}  // NOLINT
  bool given() const { return f32 != nullptr || b16 != nullptr; }
};

// preact (n, m) may be null. A row activation (softmax) is applied to y afterwards.
void dense_forward_bf16(Bf16IoOut y, float* preact, Bf16Io x, const Bf16DenseWeights& w,
                        const float* b, index_t n, const Activation& act, int num_threads);

// How dense_backward_bf16 runs its two products, dw and dx. automatic: side by side, a
// thread each, where each would run on one thread anyway (the path's tile grain) and the
// pool's workers are not asleep at the call (waking a sleeping one costs more than the pair
// gains: measured in README.md); otherwise one after the other, each on num_threads. serial
// and side_by_side (where both products are there) force one way, for the tests. The values
// are the same whichever runs.
enum class BackwardSchedule { automatic, serial, side_by_side };

// dx (n, k), dw (k, m), db (m,) may each be null; dx needs w packed with_transposed. y or
// preact as dense_backward takes them; dz lives in scratch memory of the calling thread.
// accumulate adds to dw and db.
void dense_backward_bf16(Bf16IoOut dx, float* dw, float* db, Bf16Io dy, Bf16Io x,
                         const Bf16DenseWeights& w, Bf16Io y, const float* preact, index_t n,
                         const Activation& act, bool accumulate, int num_threads,
                         BackwardSchedule schedule = BackwardSchedule::automatic);

}  // namespace densekit::lowp
