// Dense layers with bf16 products (bf16_dense.hpp): the float32 dense layer's steps around
// gemm_bf16, with the float32 -> bf16 rounding fused into the packing of each operand.
#include "lowp/bf16_dense.hpp"

#include <algorithm>
#include <vector>

#include "activations.hpp"
#include "dense.hpp"
#include "gemm/scratch.hpp"

namespace densekit::lowp {
namespace {

// dz when the activation's derivative is not one, and dz packed for dw's product; kept
// between calls (a fresh buffer each step costs its page faults).
thread_local gemm::Scratch t_dz_scratch;
thread_local PackedBf16 t_dz_packed;
// dz rounded to bf16 by row, for dx's product (its A read in place); kept likewise.
thread_local gemm::Scratch t_dz_bf16;
// A narrow product's transposed result and its operands (transposed_is_cheaper: every
// element is the same chain over the same k pairs of the same exact products, since a bf16
// product is exact in float32 and the pair rule adds a pair's products in a fixed order, so
// the bits are the direct product's); kept likewise.
thread_local gemm::Scratch t_narrow_out;
thread_local gemm::Scratch t_narrow_a;
thread_local PackedBf16 t_narrow_b;
// A float32 y for a bf16 output that is finished after the product (softmax, the transposed
// product's epilogue); kept likewise.
thread_local gemm::Scratch t_y32;

// f(p) with the array's pointer, float32 or bf16 (the overloads of the products and packings).
template <class F>
void with_values(Bf16Io v, F&& f) {
  if (v.b16 != nullptr) {
    f(v.b16);
  } else {
    f(v.f32);
  }
}

// One parallel pass over dz's rows, 32 at a time: dz = dy act'(.) for those rows (into dz;
// nothing where the derivative is one and dz is a float32 dy; a bf16 dy widened), then, while
// they are in cache, their pairs joined into dw's B panels (`panels`, when not null) and the
// rows rounded to bf16 (`rows16`, when not null). Each piece is the call it replaces
// (activation_backward over the rows, pack_bf16_into, the rounding of dz while dx's A is
// packed), elementwise, so the values are the same; one pass keeps the rows on the thread that
// made them, where the separate passes read them back from memory or from the other cores.
void dz_pass(float* dz, Bf16Io dy, Bf16Io y, const float* preact, index_t n, index_t m,
             const Activation& act, PackedBf16* panels, bf16_bits* rows16, int num_threads) {
  const bool compute = dz != dy.f32, derivative = !derivative_is_one(act);
  const index_t words = (n + 1) / 2;
  std::uint32_t* base = nullptr;
  if (panels != nullptr && size_panels(panels, n, m, words)) base = panels->data.data();
  constexpr index_t kPairs = 16;  // row pairs per task
  const int threads = threads_for_work(num_threads, double(n) * double(m), 1 << 14);
  const RowOps& ops = row_ops();
  // relu's and leaky_relu's derivative from a bf16 y in one pass over dy and y (the general
  // path widens y into a row first), what activation_backward computes
  const bool slopes_from_bf16_y =
      derivative && y.b16 != nullptr &&
      (act.kind == ActivationKind::relu || act.kind == ActivationKind::leaky_relu);
  const float slope = act.kind == ActivationKind::relu ? 0.0f : static_cast<float>(act.alpha);
  parallel_for((words + kPairs - 1) / kPairs, threads, [&](index_t task) {
    const index_t q0 = task * kPairs, q1 = std::min(words, q0 + kPairs);
    const index_t r0 = 2 * q0, r1 = std::min(n, 2 * q1), at = r0 * m, count = (r1 - r0) * m;
    if (compute && slopes_from_bf16_y) {
      ops.positive_slopes_bf16(dz + at, dy.f32 != nullptr ? dy.f32 + at : nullptr,
                               dy.b16 != nullptr ? dy.b16 + at : nullptr, y.b16 + at, count,
                               slope);
    } else if (compute) {
      const float* dy_rows = dy.f32 != nullptr ? dy.f32 + at : dz + at;
      if (dy.b16 != nullptr) ops.widen(dy.b16 + at, dz + at, count);
      const float* y_rows = y.f32 != nullptr ? y.f32 + at : nullptr;
      if (y.b16 != nullptr) {  // a bf16 y's rows widened for the derivative
        thread_local std::vector<float> widened;
        widened.resize(static_cast<size_t>(count));
        ops.widen(y.b16 + at, widened.data(), count);
        y_rows = widened.data();
      }
      if (derivative)
        activation_backward<float>(dz + at, dy_rows, y_rows,
                                   preact != nullptr ? preact + at : nullptr, r1 - r0, m, act, 1);
    }
    if (base != nullptr)
      for (index_t q = q0; q < q1; ++q) {
        const float* lo = dz + 2 * q * m;
        ops.round_pairs_panels(lo, 2 * q + 1 < n ? lo + m : nullptr, m, base + q * kPanel,
                               panels->panel_stride());
      }
    if (rows16 != nullptr) ops.round_operand(dz + at, rows16 + at, count);
  });
}

}  // namespace

namespace {

// Both layouts of w (k, m) in one pass over its rows, the two pack_bf16_into calls fused: a
// block of 32 rows is rounded once (as an operand), then written word-major as one panel of
// w^T (its 32 columns: pair q of column j is w[j][2q], w[j][2q + 1]) and joined two rows at a
// time into 16 word rows of w's panels. The words of the two packings (each element rounded
// the same way), with w read and rounded once.
void pack_both_layouts(Bf16DenseWeights* out, const float* w, index_t k, index_t m,
                       int num_threads) {
  const bool forward = size_panels(&out->forward, k, m, (k + 1) / 2);
  const bool transposed = size_panels(&out->transposed, m, k, (m + 1) / 2);
  if (!forward || !transposed) return;  // both hold words exactly when k > 0 and m > 0
  const index_t blocks = (k + kPanel - 1) / kPanel;
  const int threads = threads_for_work(num_threads, double(k) * double(m), 1 << 16);
  const RowOps& ops = row_ops();
  std::uint32_t* forward_words = out->forward.data.data();
  std::uint32_t* transposed_words = out->transposed.data.data();
  const index_t forward_stride = out->forward.panel_stride();
  const index_t transposed_stride = out->transposed.panel_stride();
  parallel_for(blocks, threads, [&](index_t block) {
    const index_t r0 = block * kPanel;
    const index_t rows = std::min<index_t>(kPanel, k - r0);
    thread_local std::vector<bf16_bits> rounded;
    rounded.resize(static_cast<size_t>(kPanel * m));
    const bf16_bits* row[kPanel];
    for (index_t i = 0; i < rows; ++i) {
      row[i] = rounded.data() + i * m;
      ops.round_operand(w + (r0 + i) * m, rounded.data() + i * m, m);
    }
    std::uint32_t* panel = transposed_words + block * transposed_stride;
    if (rows < kPanel) std::fill(panel, panel + (m + 1) / 2 * kPanel, 0u);
    panel_from_rows(row, rows, m, panel);
    for (index_t i = 0; i < rows; i += 2)
      ops.join_pairs_panels(row[i], i + 1 < rows ? row[i + 1] : nullptr, m,
                            forward_words + (r0 + i) / 2 * kPanel, forward_stride);
  });
}

}  // namespace

void pack_dense_bf16(Bf16DenseWeights* out, const float* w, index_t k, index_t m,
                     bool with_transposed, int num_threads) {
  out->k = k;
  out->m = m;
  out->has_transposed = with_transposed;
  if (with_transposed) {
    pack_both_layouts(out, w, k, m, num_threads);
  } else {
    pack_bf16_into(&out->forward, w, m, false, k, m, num_threads);
  }
}

namespace {

// y (n, m) = x @ w + b, then preact and act (elementwise), as y^T = w^T x^T: w^T's rows read
// from the forward panels (word q of column j at panel(j / 32)[q * 32 + j % 32]) into row-major
// pair words, x packed as the transposed B, the sums transposed into y (float32).
void forward_transposed(float* y, float* preact, Bf16Io x, const Bf16DenseWeights& w,
                        const float* b, index_t n, const Activation& act, int num_threads) {
  const index_t k = w.k, m = w.m, words = w.forward.words;
  auto* wt = static_cast<std::uint32_t*>(t_narrow_a.get(buffer_bytes(m, words, 4)));
  for (index_t j = 0; j < m; ++j) {
    const std::uint32_t* column = w.forward.panel(j / kRowPanel) + j % kRowPanel;
    for (index_t q = 0; q < words; ++q) wt[j * words + q] = column[q * kRowPanel];
  }
  with_values(x, [&](const auto* xp) {
    pack_bf16_into(&t_narrow_b, xp, k, true, k, n, num_threads);
  });
  auto* yt = static_cast<float*>(t_narrow_out.get(buffer_bytes(m, n, sizeof(float))));
  gemm_bf16(m, n, k, reinterpret_cast<const bf16_bits*>(wt), 2 * words, false, t_narrow_b, yt,
            nullptr, n, Bf16Epilogue{}, num_threads);
  // v = sums + b, preact = v, y = act(v): the direct product's epilogue, in its order, each
  // step over the whole of y (its rows are a few elements long)
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

void dense_forward_bf16(Bf16IoOut y, float* preact, Bf16Io x, const Bf16DenseWeights& w,
                        const float* b, index_t n, const Activation& act, int num_threads) {
  const index_t m = w.m;
  const bool transposed = n > 0 && m > 0 && w.k > 0 && transposed_is_cheaper(n, m);
  const bool row_wise = is_row_activation(act.kind);
  // a bf16 y finished after the product is finished in float32, then rounded
  float* y32 = y.f32;
  if (y32 == nullptr && (transposed || row_wise))
    y32 = static_cast<float*>(t_y32.get(buffer_bytes(n, m, sizeof(float))));
  if (transposed) {
    forward_transposed(y32, preact, x, w, b, n, act, num_threads);
  } else {
    Bf16Epilogue ep;
    ep.bias = b;
    ep.preact = preact;
    ep.ld_preact = m;
    ep.activation = row_wise ? Activation{} : act;
    with_values(x, [&](const auto* xp) {
      gemm_bf16(n, m, w.k, xp, w.k, false, w.forward, y32, y32 != nullptr ? nullptr : y.b16, m,
                ep, num_threads);
    });
    if (row_wise) activation_forward<float>(y32, y32, n, m, act, num_threads);
  }
  if (y.b16 != nullptr && y32 != nullptr) convert_to_bf16(y32, y.b16, n * m, num_threads);
  t_y32.trim();
}

void dense_backward_bf16(Bf16IoOut dx, float* dw, float* db, Bf16Io dy, Bf16Io x,
                         const Bf16DenseWeights& w, Bf16Io y, const float* preact, index_t n,
                         const Activation& act, bool accumulate, int num_threads,
                         BackwardSchedule schedule) {
  const index_t k = w.k, m = w.m;
  if (dx.given() && !w.has_transposed)
    throw ArgumentError("dense_backward_bf16: dx needs the weights packed with_transposed");
  float* dz = const_cast<float*>(dy.f32);  // written only when it is the scratch
  if (dy.b16 != nullptr || !derivative_is_one(act))
    dz = static_cast<float*>(t_dz_scratch.get(buffer_bytes(n, m, sizeof(float))));
  // dw's B is dz packed (unless the product runs transposed); dx's A is dz in bf16 rows, read
  // in place (an even m: whole pairs)
  const bool dw_direct =
      dw != nullptr && n > 0 && !(k > 0 && m > 0 && transposed_is_cheaper(k, m));
  bf16_bits* dz16 = nullptr;
  if (dx.given() && m % 2 == 0 && n > 0 && m > 0)
    dz16 = static_cast<bf16_bits*>(t_dz_bf16.get(buffer_bytes(n, m, sizeof(bf16_bits))));
  if (n > 0)
    dz_pass(dz, dy, y, preact, n, m, act, dw_direct ? &t_dz_packed : nullptr, dz16,
            num_threads);
  if (db != nullptr) dense_bias_gradient<float>(db, dz, n, m, accumulate, num_threads);
  // the calling thread's buffers, which the products may use from another thread
  PackedBf16& dz_packed = t_dz_packed;
  gemm::Scratch& narrow_out = t_narrow_out;
  auto dw_product = [&](int threads) {
    if (n == 0) {
      if (!accumulate)
        for (index_t i = 0; i < k * m; ++i) dw[i] = 0.0f;
    } else if (!dw_direct) {
      // dw^T (m, k) = dz^T x: dz^T packed as A (two rows of dz joined at a time), x as B
      with_values(x, [&](const auto* xp) {
        pack_bf16_into(&dz_packed, xp, k, false, n, k, threads);
      });
      auto* dwt = static_cast<float*>(narrow_out.get(buffer_bytes(m, k, sizeof(float))));
      gemm_bf16(m, k, n, dz, m, true, dz_packed, dwt, nullptr, k, Bf16Epilogue{}, threads);
      for (index_t p = 0; p < k; ++p)  // v = (accumulate ? dw : 0) + sums, as the epilogue
        for (index_t j = 0; j < m; ++j)
          dw[p * m + j] = accumulate ? dw[p * m + j] + dwt[j * k + p] : dwt[j * k + p];
      narrow_out.trim();
    } else {
      Bf16Epilogue ep;  // x^T rounded as it is packed, two rows of x at a time
      ep.accumulate = accumulate;
      with_values(x, [&](const auto* xp) {
        gemm_bf16(k, m, n, xp, k, true, dz_packed, dw, nullptr, m, ep, threads);
      });
    }
  };
  auto dx_product = [&](int threads) {
    const Bf16Epilogue ep;
    if (dz16 != nullptr) {
      gemm_bf16(n, k, m, dz16, m, false, w.transposed, dx.f32, dx.b16, k, ep, threads);
    } else {
      gemm_bf16(n, k, m, dz, m, false, w.transposed, dx.f32, dx.b16, k, ep, threads);
    }
  };
  // Products too small for a second thread to pay (each would run on one: a layer of a few
  // units, a small batch) run side by side, a thread each, instead of one after the other,
  // where the pool's workers are awake: they are independent, so the values are the
  // same (BackwardSchedule; measured in README.md).
  const bool both = dw != nullptr && dx.given() && n > 0;
  bool side_by_side = both && schedule == BackwardSchedule::side_by_side;
  if (schedule == BackwardSchedule::automatic)
    side_by_side = both && num_threads > 1 &&
                   gemm_bf16_threads(dw_direct ? k : m, dw_direct ? m : k, n, num_threads) == 1 &&
                   gemm_bf16_threads(n, k, m, num_threads) == 1 && !pool_workers_asleep();
  if (side_by_side) {
    parallel_for(2, 2, [&](index_t product) {
      if (product == 0) {
        dw_product(1);
      } else {
        dx_product(1);
      }
    });
  } else {
    if (dw != nullptr) dw_product(num_threads);
    if (dx.given()) dx_product(num_threads);
  }
  t_dz_scratch.trim();
  t_dz_bf16.trim();
  trim_kept(&t_dz_packed);
}

}  // namespace densekit::lowp
