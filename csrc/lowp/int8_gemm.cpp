// int8 inference's driver: the path choice, weight quantization and packing, per-row
// quantization of x and the float32 epilogue (see int8_gemm.hpp). Baseline ISA.
#include "lowp/int8_gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "activations.hpp"
#include "gemm/isa.hpp"
#include "gemm/scratch.hpp"
#include "lowp/amx.hpp"
#include "lowp/path_choice.hpp"
#include "lowp/row_ops.hpp"
#include "parallel.hpp"
#include "vecmath/scalar_activations.hpp"
#include "vecmath/vecmath.hpp"

namespace densekit::lowp {
namespace {

constexpr index_t kBlockQuads = 128;  // k block: 512 k, a 32-column B panel of 16 KiB

thread_local gemm::Scratch t_quantized_x;  // a call's x scales and quantized rows

bool cpu_has_avx512_vnni() {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  const gemm::CpuFeatures& f = gemm::cpu_features();
  return f.avx512_vnni && f.avx512bw;
#else
  return false;
#endif
}

Int8Choice choose() {
  Int8Choice choice;
  choice.best = int8_path_supported(Int8Path::amx)           ? Int8Path::amx
                : int8_path_supported(Int8Path::avx512_vnni) ? Int8Path::avx512_vnni
                                                             : Int8Path::emulated;
  const PathRequest r = read_path_request("DENSEKIT_INT8", {"emulated", "avx512_vnni", "amx"},
                                          static_cast<int>(choice.best));
  choice.path = static_cast<Int8Path>(r.path);
  choice.forced = r.forced;
  choice.requested = r.requested;
  choice.note = r.note;
  return choice;
}

const TileSet<std::int32_t>& tiles_for(Int8Path path) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  static const TileSet<std::int32_t> native = int8_path_supported(Int8Path::avx512_vnni)
                                                  ? int8_tiles_avx512_vnni()
                                                  : TileSet<std::int32_t>{};
  static const TileSet<std::int32_t> emulated = emulated_tiles<std::int32_t>(
      int8_tiles_portable, int8_tiles_avx2, int8_tiles_avx512);
#if defined(DENSEKIT_HAVE_AMX_KERNELS)
  static const TileSet<std::int32_t> amx =
      int8_path_supported(Int8Path::amx) ? int8_tiles_amx() : TileSet<std::int32_t>{};
  if (path == Int8Path::amx) return amx;
#endif
  return path == Int8Path::avx512_vnni ? native : emulated;
#else
  (void)path;
  static const TileSet<std::int32_t> emulated = int8_tiles_portable();
  return emulated;
#endif
}

// Symmetric int8 of v / scale (0 when scale is 0), rounded to nearest even. |v / scale| <= 127
// (times 1 + 2^-23) since scale = max |v| / 127, so adding and subtracting 1.5 * 2^23 rounds
// it exactly as nearbyint does (and vectorises on the baseline ISA, which has no round
// instruction); the clamp keeps the rounding of the scale itself from reaching 128.
inline std::int32_t quantize_nonzero(float v, float scale) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  float q = (v / scale + kRound) - kRound;  // IEEE arithmetic: never folded without -ffast-math
  q = q < -127.0f ? -127.0f : q;  // selects, not branches: the loops over a row vectorise
  q = q > 127.0f ? 127.0f : q;
  return static_cast<std::int32_t>(q);
}
inline std::int32_t quantize(float v, float scale) {
  return scale == 0.0f ? 0 : quantize_nonzero(v, scale);
}

struct NoGuard {};

}  // namespace

bool int8_path_supported(Int8Path path) {
  if (path == Int8Path::emulated) return true;
  if (gemm::isa_choice().isa != gemm::Isa::avx512) return false;
  return path == Int8Path::amx ? amx_support().int8 : cpu_has_avx512_vnni();
}

const char* int8_path_name(Int8Path path) {
  return path == Int8Path::amx           ? "amx"
         : path == Int8Path::avx512_vnni ? "avx512_vnni"
                                         : "emulated";
}

bool int8_path_from_name(const std::string& name, Int8Path* path) {
  if (name == "amx") {
    *path = Int8Path::amx;
  } else if (name == "avx512_vnni") {
    *path = Int8Path::avx512_vnni;
  } else if (name == "emulated") {
    *path = Int8Path::emulated;
  } else {
    return false;
  }
  return true;
}

const Int8Choice& int8_choice() {
  static const Int8Choice choice = choose();
  return choice;
}

bool quantize_weights(const float* w, index_t k, index_t n, std::int8_t* wq, float* scales,
                      int num_threads) {
  constexpr index_t kColumns = 64;
  const index_t blocks = (n + kColumns - 1) / kColumns;
  std::vector<char> finite(static_cast<size_t>(std::max<index_t>(blocks, 1)), 1);
  parallel_for(blocks, threads_for_work(num_threads, double(k) * double(n), 1 << 15),
               [&](index_t blk) {
                 const index_t j0 = blk * kColumns, j1 = std::min(n, j0 + kColumns);
                 float peak[kColumns] = {};
                 bool ok = true;
                 for (index_t p = 0; p < k; ++p)
                   for (index_t j = j0; j < j1; ++j) {
                     const float v = w[p * n + j];
                     ok = ok && std::isfinite(v);
                     peak[j - j0] = std::max(peak[j - j0], std::fabs(v));
                   }
                 finite[static_cast<size_t>(blk)] = ok;
                 for (index_t j = j0; j < j1; ++j) scales[j] = peak[j - j0] / 127.0f;
                 for (index_t p = 0; p < k; ++p)
                   for (index_t j = j0; j < j1; ++j)
                     wq[p * n + j] = static_cast<std::int8_t>(quantize(w[p * n + j], scales[j]));
               });
  return std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; });
}

PackedInt8 pack_int8(const std::int8_t* wq, const float* scales, index_t k, index_t n,
                     int num_threads) {
  if (k > kMaxInt8Depth)
    throw ArgumentError("int8 weights: at most " + std::to_string(kMaxInt8Depth) +
                        " input features (the int32 sums stay exact)");
  PackedInt8 p;
  auto byte = [&](index_t row, index_t j) -> std::uint32_t {
    return row < k ? static_cast<std::uint8_t>(wq[row * n + j]) : 0u;
  };
  p.panels = pack_panels(k, n, (k + 3) / 4, num_threads, [&](index_t q, index_t j) {
    return byte(4 * q, j) | (byte(4 * q + 1, j) << 8) | (byte(4 * q + 2, j) << 16) |
           (byte(4 * q + 3, j) << 24);
  });
  p.col_sums.assign(static_cast<size_t>(n), 0);
  for (index_t r = 0; r < k; ++r)
    for (index_t j = 0; j < n; ++j) p.col_sums[size_t(j)] += wq[r * n + j];
  p.scales.assign(scales, scales + n);
  return p;
}

namespace {

thread_local PackedPanels t_x_panels;  // a narrow product's x, packed as B (below)
thread_local std::vector<std::int32_t> t_row_sums;  // and its rows' sums of q

// The quantized rows of x: row_scale[i] and xq (m rows of `stride` bytes, q + 128, padding
// 128), in the calling thread's kept scratch (no allocation, and no fresh pages to fault in,
// once a call of this size has run).
struct QuantizedRows {
  float* row_scale;
  std::uint8_t* xq;
};

QuantizedRows quantize_rows(index_t m, const float* x, index_t k, index_t stride,
                            int num_threads) {
  const size_t scale_bytes = (static_cast<size_t>(m) * sizeof(float) + 63) / 64 * 64;
  auto* scratch =
      static_cast<unsigned char*>(t_quantized_x.get(scale_bytes + buffer_bytes(m, stride, 1)));
  QuantizedRows rows{reinterpret_cast<float*>(scratch), scratch + scale_bytes};
  const auto quantize = row_ops().quantize_rows;
  // blocks of kQuantizeBlock rows; a thread per 64K values: below that, waking a worker costs
  // more than it saves (the 256 x 256 x of a 256-128 layer: 53 -> 44 us on 2 threads with 16K)
  const index_t blocks = (m + kQuantizeBlock - 1) / kQuantizeBlock;
  parallel_for(blocks, threads_for_work(num_threads, double(m) * double(k), 1 << 16),
               [&](index_t block) {
                 const index_t r0 = block * kQuantizeBlock;
                 quantize(x + r0 * k, std::min(kQuantizeBlock, m - r0), k, stride,
                          rows.xq + r0 * stride, rows.row_scale + r0);
               });
  return rows;
}

// A quantized row's bytes q + 128 made q (signed bytes, xor 0x80) in place; returns sum q.
// Two plain loops that vectorise (len is a parameter: a byte store could alias a local whose
// address escaped, and the loop would reload it every turn).
std::int32_t to_signed_bytes(std::uint8_t* row, index_t len) {
  std::int32_t biased = 0;  // sum of q + 128
  for (index_t p = 0; p < len; ++p) biased += row[p];
  for (index_t p = 0; p < len; ++p) row[p] ^= 0x80u;
  return biased - 128 * static_cast<std::int32_t>(len);
}

// y (m, n) for a narrow W (few columns, transposed_is_cheaper) as y^T = W^T x^T, with the
// operands' signs swapped for vpdpbusd's unsigned-by-signed form: A = W^T + 128 (a packed word
// of W xor 0x80808080; its zero padding becomes 128), B = x's q as signed bytes (the rows xor
// 0x80, padding 0), so the sums are sum_p (W + 128) q = sum_p W q + 128 rowsum(q). The integer
// W q is the direct product's, exactly, and it is dequantized by the same float32 operations
// (float(S) * (scale_i * scale_j), then + b[j]): the same bits.
void dense_int8_transposed(Int8Path path, index_t m, const float* x, const PackedInt8& w,
                           float* y, const Int8Epilogue& ep, int num_threads) {
  const index_t k = w.panels.k, n = w.panels.n, quads = w.panels.words;
  const index_t stride = 4 * quads;
  const QuantizedRows rows = quantize_rows(m, x, k, stride, num_threads);
  std::vector<std::int32_t>& row_sums = t_row_sums;
  row_sums.resize(static_cast<size_t>(m));
  for (index_t i = 0; i < m; ++i)
    row_sums[size_t(i)] = to_signed_bytes(rows.xq + i * stride, stride);
  const RowOps& ops = row_ops();
  pack_panels_with(&t_x_panels, k, m, quads, num_threads,
                   [&](std::uint32_t* dst, index_t i0, index_t cols) {
                     for (index_t c0 = 0; c0 < cols; c0 += 16) {  // 16 rows of x at a time
                       const void* from[16];
                       const int count = static_cast<int>(std::min<index_t>(16, cols - c0));
                       for (int c = 0; c < count; ++c) from[c] = rows.xq + (i0 + c0 + c) * stride;
                       ops.word_major(from, count, quads, dst + c0, kPanel);
                     }
                   });
  // rows r0.. of W^T + 128, word-major or by row (stride > 0: the padding 128 too, times B's
  // zero padding)
  auto pack_a = [&](index_t r0, int count, std::uint32_t* out, index_t row_stride) {
    for (int r = 0; r < count; ++r) {
      const index_t j = r0 + r;
      const std::uint32_t* column = w.panels.panel(j / kPanel) + j % kPanel;
      if (row_stride > 0) {
        std::uint32_t* row = out + r * row_stride;
        for (index_t q = 0; q < quads; ++q) row[q] = column[q * kPanel] ^ 0x80808080u;
        std::fill(row + quads, row + row_stride, 0x80808080u);
      } else {
        for (index_t q = 0; q < quads; ++q) out[q * count + r] = column[q * kPanel] ^ 0x80808080u;
      }
    }
  };
  const double flops = product_flops(m, n, k);
  run_tiles<std::int32_t>(
      n, t_x_panels, tiles_for(path), flops, num_threads, kBlockQuads, pack_a,
      [](std::uint32_t*, index_t, int) { return false; }, [] { return NoGuard{}; },
      [&](const std::int32_t* acc, index_t cols, index_t j, index_t i0, int) {
        const float scale = w.scales[size_t(j)];
        for (index_t c = 0; c < cols; ++c) {
          const index_t i = i0 + c;
          const std::int32_t s = acc[c] - 128 * row_sums[size_t(i)];
          float v = static_cast<float>(s) * (rows.row_scale[i] * scale);
          if (ep.bias != nullptr) v += ep.bias[j];
          y[i * n + j] = v;
        }
      });
  apply_row_activation(y, m * n, ep.activation);  // elementwise: y's rows are contiguous
  t_quantized_x.trim();
  trim_kept(&t_x_panels);
  if (t_row_sums.size() * sizeof(std::int32_t) > gemm::Scratch::kMaxKept) t_row_sums = {};
}

}  // namespace

void dense_int8_with_path(Int8Path path, index_t m, const float* x, const PackedInt8& w, float* y,
                          const Int8Epilogue& ep, int num_threads) {
  if (!int8_path_supported(path))
    throw ArgumentError(std::string("int8 path '") + int8_path_name(path) +
                        "' is not supported by this CPU/build");
  const index_t k = w.panels.k, n = w.panels.n;
  if (is_row_activation(ep.activation.kind)) {
    // softmax / log_softmax over the finished rows, as dense_forward's row activations
    Int8Epilogue sums = ep;
    sums.activation = Activation{};
    dense_int8_with_path(path, m, x, w, y, sums, num_threads);
    if (m > 0) activation_forward<float>(y, y, m, n, ep.activation, num_threads);
    return;
  }
  if (m <= 0 || n <= 0) return;
  if (k > 0 && transposed_is_cheaper(m, n)) {
    dense_int8_transposed(path, m, x, w, y, ep, num_threads);
    return;
  }
  // x quantized once, row by row, as unsigned bytes q + 128 (padding past k is 128 too), so
  // that the tasks of a row tile only gather words. The block tiles read the rows in place,
  // padded to their steps of k words.
  const TileSet<std::int32_t>& tiles = tiles_for(path);
  const bool blocks = tiles.block != nullptr;
  const index_t quads = w.panels.words;
  const index_t stride = 4 * (blocks ? padded_words(quads) : quads);
  const QuantizedRows rows = quantize_rows(m, x, k, stride, num_threads);
  const float* row_scale = rows.row_scale;
  const std::uint8_t* xq = rows.xq;
  const RowOps& ops = row_ops();
  auto pack_a = [&](index_t r0, int count, std::uint32_t* out, index_t row_stride) {
    if (row_stride > 0) {  // the rows as they are (the block tiles, where not in place)
      for (int i = 0; i < count; ++i)
        std::memcpy(out + i * row_stride, xq + (r0 + i) * stride, size_t(stride));
      return;
    }
    const void* row[kMaxRows];  // a word is 4 consecutive bytes of a row, little-endian
    for (int i = 0; i < count; ++i) row[i] = xq + (r0 + i) * stride;
    ops.word_major(row, count, quads, out, count);
  };
  const double flops = product_flops(m, n, k);
  // Every word of A carries +128 per member, padding included: 128 * colsum covers the real
  // rows, and padded rows of B are zero.
  run_tiles<std::int32_t>(
      m, w.panels, tiles, flops, num_threads, kBlockQuads, pack_a,
      [](std::uint32_t*, index_t, int) { return false; }, [] { return NoGuard{}; },
      [&](const std::int32_t* acc, index_t cols, index_t i, index_t j0, int) {
        float* out = y + i * n + j0;
        ops.dequantize_row(acc, w.col_sums.data() + j0, w.scales.data() + j0, row_scale[i],
                           ep.bias != nullptr ? ep.bias + j0 : nullptr, out, cols);
        apply_row_activation(out, cols, ep.activation);
      },
      nullptr, 0, blocks ? xq : nullptr, stride, /*a_rows_padded=*/true);
  t_quantized_x.trim();
}

double int8_peak_probe(index_t steps, int num_threads) {
  return run_probe(tiles_for(int8_choice().path), steps, num_threads);
}

void dense_int8(index_t m, const float* x, const PackedInt8& w, float* y,
                const Int8Epilogue& epilogue, int num_threads) {
  dense_int8_with_path(int8_choice().path, m, x, w, y, epilogue, num_threads);
}

}  // namespace densekit::lowp
