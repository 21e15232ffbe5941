// Dense layers with bf16 products (bf16_dense.hpp): the float32 dense layer's steps around
// gemm_bf16, with the float32 -> bf16 rounding fused into the packing of each operand.
#include "lowp/bf16_dense.hpp"

#include <algorithm>

#include "activations.hpp"
#include "dense.hpp"
#include "gemm/scratch.hpp"

namespace densekit::lowp {
namespace {

// dz when the activation's derivative is not one, and dz packed for dw's product; kept
// between calls (a fresh buffer each step costs its page faults).
thread_local gemm::Scratch t_dz_scratch;
thread_local PackedBf16 t_dz_packed;
// A narrow product's transposed result and its operands (transposed_is_cheaper: every
// element is the same chain over the same k pairs of the same exact products, since a bf16
// product is exact in float32 and the pair rule adds a pair's products in a fixed order, so
// the bits are the direct product's); kept likewise.
thread_local gemm::Scratch t_narrow_out;
thread_local gemm::Scratch t_narrow_a;
thread_local PackedBf16 t_narrow_b;

}  // namespace

void pack_dense_bf16(Bf16DenseWeights* out, const float* w, index_t k, index_t m,
                     bool with_transposed, int num_threads) {
  out->k = k;
  out->m = m;
  pack_bf16_into(&out->forward, w, m, false, k, m, num_threads);
  out->has_transposed = with_transposed;
  if (with_transposed) pack_bf16_into(&out->transposed, w, m, true, m, k, num_threads);
}

namespace {

// y (n, m) = x @ w + b, then preact and act (elementwise), as y^T = w^T x^T: w^T's rows read
// from the forward panels (word q of column j at panel(j / 32)[q * 32 + j % 32]) into row-major
// pair words, x packed as the transposed B, the sums transposed into y.
void forward_transposed(float* y, float* preact, const float* x, const Bf16DenseWeights& w,
                        const float* b, index_t n, const Activation& act, int num_threads) {
  const index_t k = w.k, m = w.m, words = w.forward.words;
  auto* wt = static_cast<std::uint32_t*>(t_narrow_a.get(buffer_bytes(m, words, 4)));
  for (index_t j = 0; j < m; ++j) {
    const std::uint32_t* column = w.forward.panel(j / kRowPanel) + j % kRowPanel;
    for (index_t q = 0; q < words; ++q) wt[j * words + q] = column[q * kRowPanel];
  }
  pack_bf16_into(&t_narrow_b, x, k, true, k, n, num_threads);
  auto* yt = static_cast<float*>(t_narrow_out.get(buffer_bytes(m, n, sizeof(float))));
  gemm_bf16(m, n, k, reinterpret_cast<const bf16_bits*>(wt), 2 * words, false, t_narrow_b, yt,
            nullptr, n, Bf16Epilogue{}, num_threads);
  // v = sums + b, preact = v, y = act(v): the direct product's epilogue, in its order
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < m; ++j) y[i * m + j] = yt[j * n + i];
  if (b != nullptr)
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < m; ++j) y[i * m + j] += b[j];
  if (preact != nullptr) std::copy(y, y + n * m, preact);
  if (act.kind != ActivationKind::linear) activation_forward<float>(y, y, n, m, act, num_threads);
  t_narrow_a.trim();
  t_narrow_out.trim();
  trim_kept(&t_narrow_b);
}

}  // namespace

void dense_forward_bf16(float* y, float* preact, const float* x, const Bf16DenseWeights& w,
                        const float* b, index_t n, const Activation& act, int num_threads) {
  if (n > 0 && w.m > 0 && w.k > 0 && transposed_is_cheaper(n, w.m)) {
    forward_transposed(y, preact, x, w, b, n, act, num_threads);
    return;
  }
  const bool row_wise = is_row_activation(act.kind);
  Bf16Epilogue ep;
  ep.bias = b;
  ep.preact = preact;
  ep.ld_preact = w.m;
  ep.activation = row_wise ? Activation{} : act;
  gemm_bf16(n, w.m, w.k, x, w.k, false, w.forward, y, nullptr, w.m, ep, num_threads);
  if (row_wise) activation_forward<float>(y, y, n, w.m, act, num_threads);
}

void dense_backward_bf16(float* dx, float* dw, float* db, const float* dy, const float* x,
                         const Bf16DenseWeights& w, const float* y, const float* preact,
                         index_t n, const Activation& act, bool accumulate, int num_threads) {
  const index_t k = w.k, m = w.m;
  if (dx != nullptr && !w.has_transposed)
    throw ArgumentError("dense_backward_bf16: dx needs the weights packed with_transposed");
  const float* dz = dy;
  if (!derivative_is_one(act)) {
    auto* buffer = static_cast<float*>(t_dz_scratch.get(buffer_bytes(n, m, sizeof(float))));
    activation_backward<float>(buffer, dy, y, preact, n, m, act, num_threads);
    dz = buffer;
  }
  if (db != nullptr) dense_bias_gradient<float>(db, dz, n, m, accumulate, num_threads);
  if (dw != nullptr) {
    if (n == 0) {
      if (!accumulate)
        for (index_t i = 0; i < k * m; ++i) dw[i] = 0.0f;
    } else if (k > 0 && m > 0 && transposed_is_cheaper(k, m)) {
      // dw^T (m, k) = dz^T x: dz^T packed as A (two rows of dz joined at a time), x as B
      pack_bf16_into(&t_dz_packed, x, k, false, n, k, num_threads);
      auto* dwt = static_cast<float*>(t_narrow_out.get(buffer_bytes(m, k, sizeof(float))));
      gemm_bf16(m, k, n, dz, m, true, t_dz_packed, dwt, nullptr, k, Bf16Epilogue{}, num_threads);
      for (index_t p = 0; p < k; ++p)  // v = (accumulate ? dw : 0) + sums, as the epilogue
        for (index_t j = 0; j < m; ++j)
          dw[p * m + j] = accumulate ? dw[p * m + j] + dwt[j * k + p] : dwt[j * k + p];
      t_narrow_out.trim();
    } else {
      pack_bf16_into(&t_dz_packed, dz, m, false, n, m, num_threads);
      Bf16Epilogue ep;  // x^T rounded as it is packed, two rows of x at a time
      ep.accumulate = accumulate;
      gemm_bf16(k, m, n, x, k, true, t_dz_packed, dw, nullptr, m, ep, num_threads);
    }
  }
  if (dx != nullptr) {
    Bf16Epilogue ep;
    gemm_bf16(n, k, m, dz, m, false, w.transposed, dx, nullptr, k, ep, num_threads);
  }
  t_dz_scratch.trim();
  trim_kept(&t_dz_packed);
}

}  // namespace densekit::lowp
