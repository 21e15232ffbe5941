// Dense layers with bf16 products (bf16_dense.hpp): the float32 dense layer's steps around
// gemm_bf16, with the float32 -> bf16 rounding fused into the packing of each operand.
#include "lowp/bf16_dense.hpp"

#include "activations.hpp"
#include "dense.hpp"
#include "gemm/scratch.hpp"

namespace densekit::lowp {
namespace {

// dz when the activation's derivative is not one, and dz packed for dw's product; kept
// between calls (a fresh buffer each step costs its page faults).
thread_local gemm::Scratch t_dz_scratch;
thread_local PackedBf16 t_dz_packed;

}  // namespace

void pack_dense_bf16(Bf16DenseWeights* out, const float* w, index_t k, index_t m,
                     bool with_transposed, int num_threads) {
  out->k = k;
  out->m = m;
  pack_bf16_into(&out->forward, w, m, false, k, m, num_threads);
  out->has_transposed = with_transposed;
  if (with_transposed) pack_bf16_into(&out->transposed, w, m, true, m, k, num_threads);
}

void dense_forward_bf16(float* y, float* preact, const float* x, const Bf16DenseWeights& w,
                        const float* b, index_t n, const Activation& act, int num_threads) {
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
  if (t_dz_packed.data.size() * sizeof(std::uint32_t) > gemm::Scratch::kMaxKept)
    t_dz_packed = PackedBf16{};
}

}  // namespace densekit::lowp
