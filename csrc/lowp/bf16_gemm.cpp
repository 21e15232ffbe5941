// The bf16 product's driver: the path choice, packing, the task loop and the float32 epilogue
// (see bf16_gemm.hpp). Baseline ISA; the tiles live in the per-path files.
#include "lowp/bf16_gemm.hpp"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gemm/isa.hpp"
#include "gemm/scratch.hpp"
#include "lowp/amx.hpp"
#include "lowp/path_choice.hpp"
#include "lowp/row_ops.hpp"
#include "parallel.hpp"
#include "vecmath/scalar_activations.hpp"
#include "vecmath/vecmath.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace densekit::lowp {
namespace {

constexpr index_t kBlockPairs = 256;  // k block: 512 k, a 32-column B panel of 32 KiB

bool cpu_has_avx512_bf16() {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  const gemm::CpuFeatures& f = gemm::cpu_features();
  return f.avx512_bf16 && f.avx512bw && f.avx512vl;
#else
  return false;
#endif
}

Bf16Choice choose() {
  Bf16Choice choice;
  choice.best = bf16_path_supported(Bf16Path::amx)           ? Bf16Path::amx
                : bf16_path_supported(Bf16Path::avx512_bf16) ? Bf16Path::avx512_bf16
                                                             : Bf16Path::emulated;
  const PathRequest r = read_path_request("DENSEKIT_BF16", {"emulated", "avx512_bf16", "amx"},
                                          static_cast<int>(choice.best));
  choice.path = static_cast<Bf16Path>(r.path);
  choice.forced = r.forced;
  choice.requested = r.requested;
  choice.note = r.note;
  return choice;
}

// The emulated tiles follow the float32 engine's ISA.
const Bf16Tiles& tiles_for(Bf16Path path) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  static const Bf16Tiles native = bf16_path_supported(Bf16Path::avx512_bf16)
                                      ? bf16_tiles_avx512_bf16()
                                      : Bf16Tiles{};
  static const Bf16Tiles emulated = emulated_tiles<float>(
      bf16_tiles_portable, bf16_tiles_avx2, bf16_tiles_avx512);
#if defined(DENSEKIT_HAVE_AMX_KERNELS)
  static const Bf16Tiles amx =
      bf16_path_supported(Bf16Path::amx) ? bf16_tiles_amx() : Bf16Tiles{};
  if (path == Bf16Path::amx) return amx;
#endif
  return path == Bf16Path::avx512_bf16 ? native : emulated;
#else
  (void)path;
  static const Bf16Tiles emulated = bf16_tiles_portable();
  return emulated;
#endif
}

// DAZ and FTZ on this thread for the emulated tiles' lifetime (x86: MXCSR; the float32 code
// that follows runs under the caller's mode again).
class FlushDenormals {
 public:
  explicit FlushDenormals(bool on) : on_(on) {
#if defined(__x86_64__) || defined(__i386__)
    if (on_) {
      saved_ = _mm_getcsr();
      _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
    }
#endif
  }
  ~FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    if (on_) _mm_setcsr(saved_);
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  bool on_;
  unsigned saved_ = 0;
};

// Rows [r0, r0 + rows) of op(A) as pair words, pair q of row i at out[q * rows + i].
void pack_a(const bf16_bits* a, index_t lda, bool trans_a, index_t r0, int rows, index_t k,
            std::uint32_t* out) {
  const index_t pairs = (k + 1) / 2;
  if (!trans_a) {  // the rows' whole pairs by the ISA's word-major copy, an odd k's last alone
    const bf16_bits* row[kMaxRows];
    for (int i = 0; i < rows; ++i) row[i] = a + (r0 + i) * lda;
    row_ops().word_major(reinterpret_cast<const void* const*>(row), rows, k / 2, out, rows);
    if (k % 2)
      for (int i = 0; i < rows; ++i) out[(pairs - 1) * rows + i] = row[i][k - 1];
  } else {
    const auto join_pairs = row_ops().join_pairs;  // rows 2q and 2q + 1 of A^T, joined
    for (index_t q = 0; q < k / 2; ++q)
      join_pairs(a + 2 * q * lda + r0, a + (2 * q + 1) * lda + r0, out + q * rows, rows);
    if (k % 2)
      for (int i = 0; i < rows; ++i) out[(pairs - 1) * rows + i] = a[(k - 1) * lda + r0 + i];
  }
}

// The same from float32 A, rounded to bf16 as it is packed: a row is rounded into `row`
// (the pair words of the row, an odd k padded with zero), or, transposed, two rows of A^T at
// a time straight into pair words.
void pack_a(const float* a, index_t lda, bool trans_a, index_t r0, int rows, index_t k,
            std::uint32_t* out, std::vector<bf16_bits>& row) {
  const index_t pairs = (k + 1) / 2;
  if (!trans_a) {
    // the rows rounded one after another (pair words, low half the even member), then
    // written pair-major
    row.resize(static_cast<size_t>(2 * pairs * rows));
    for (int i = 0; i < rows; ++i) {
      bf16_bits* words = row.data() + 2 * pairs * i;
      if (pairs > 0) words[2 * pairs - 1] = 0;  // an odd k's zero member
      row_ops().round_operand(a + (r0 + i) * lda, words, k);
    }
    const bf16_bits* rounded[kMaxRows];
    for (int i = 0; i < rows; ++i) rounded[i] = row.data() + 2 * pairs * i;
    row_ops().word_major(reinterpret_cast<const void* const*>(rounded), rows, pairs, out, rows);
  } else {
    const auto round_pairs = row_ops().round_pairs;
    for (index_t q = 0; q < k / 2; ++q)
      round_pairs(a + 2 * q * lda + r0, a + (2 * q + 1) * lda + r0, out + q * rows, rows);
    if (k % 2) {
      std::uint32_t* last = out + (pairs - 1) * rows;
      for (int i = 0; i < rows; ++i) {
        std::uint32_t u;
        std::memcpy(&u, a + (k - 1) * lda + r0 + i, sizeof u);
        last[i] = bf16_round_bits(u);
      }
    }
  }
}

// Rows [r0, r0 + rows) of op(A) by row for the block tiles: pair q of row i at out[i * stride
// + q], zero words from the pairs' end to stride (an odd k's last pair has a zero high half). A
// row-major A is copied (float32 rounded) row by row; a transposed one is packed word-major
// (pack_word_major: its two-rows-at-a-time join) and the words transposed back (16 x 16 word
// transposes in registers on AVX-512).
template <typename AT, class PackWordMajor>
void pack_a_by_row(const AT* a, index_t lda, bool trans_a, index_t r0, int rows, index_t k,
                   std::uint32_t* out, index_t stride, PackWordMajor&& pack_word_major) {
  const index_t pairs = (k + 1) / 2;
  if (!trans_a) {
    for (int i = 0; i < rows; ++i) {
      std::uint32_t* row = out + i * stride;
      std::fill(row + k / 2, row + stride, 0u);
      auto* halves = reinterpret_cast<bf16_bits*>(row);
      if constexpr (std::is_same_v<AT, float>) {
        row_ops().round_operand(a + (r0 + i) * lda, halves, k);
      } else {
        std::memcpy(halves, a + (r0 + i) * lda, size_t(k) * sizeof(bf16_bits));
      }
    }
    return;
  }
  thread_local std::vector<std::uint32_t> word_major;
  word_major.resize(static_cast<size_t>(pairs * rows));
  pack_word_major(word_major.data());
  // back by the ISA's word-major copy, its "rows" being the word-major lines: 16 lines (pairs
  // q0..q0 + 15, a zero line past the pairs) give words q0..q0 + 15 of every row
  static const std::uint32_t zeros[kMaxBlockRows] = {};
  for (index_t q0 = 0; q0 < stride; q0 += kPanelWordAlign) {
    const void* lines[kPanelWordAlign];
    for (index_t c = 0; c < kPanelWordAlign; ++c)
      lines[c] = q0 + c < pairs ? word_major.data() + (q0 + c) * rows : zeros;
    row_ops().word_major(lines, int(kPanelWordAlign), rows, out + q0, stride);
  }
}

// All of op(A) = A^T at once, row tile rt at out + words * r0: pair q of every row of op(A)
// is rows 2q and 2q + 1 of the stored a, joined (float32 rounded first) along their whole
// length into a line of words. A block of lines is made first, then cut into the row tiles
// (each tile's words of the block are one contiguous run, and the lines' stores have retired
// before they are read back). Reads whole rows in order where packing tile by tile would read
// a few columns of every row. Blocks run in parallel.
template <typename AT>
void pack_a_transposed(const AT* a, index_t lda, index_t m, index_t k, index_t row_tiles,
                       std::uint32_t* out, int threads) {
  const index_t words = (k + 1) / 2;
  constexpr index_t kBlock = 16;
  std::vector<index_t> first_row(static_cast<size_t>(row_tiles) + 1);
  for (index_t rt = 0; rt <= row_tiles; ++rt) first_row[size_t(rt)] = m * rt / row_tiles;
  parallel_for((words + kBlock - 1) / kBlock, threads, [&](index_t block) {
    thread_local std::vector<std::uint32_t> lines;
    lines.resize(static_cast<size_t>(kBlock * m));
    const index_t q0 = block * kBlock;
    const index_t count = std::min(words, q0 + kBlock) - q0;
    for (index_t b = 0; b < count; ++b) {
      const AT* lo = a + 2 * (q0 + b) * lda;
      const AT* hi = 2 * (q0 + b) + 1 < k ? lo + lda : nullptr;  // null: an odd k's last pair
      std::uint32_t* line = lines.data() + b * m;
      if constexpr (std::is_same_v<AT, float>) {
        row_ops().round_pairs(lo, hi, line, m);
      } else {
        row_ops().join_pairs(lo, hi, line, m);
      }
    }
    for (index_t rt = 0; rt < row_tiles; ++rt) {
      const index_t r0 = first_row[size_t(rt)];
      const index_t rows = first_row[size_t(rt) + 1] - r0;
      std::uint32_t* to = out + words * r0 + q0 * rows;
      // the usual tile heights as copies of a known length, inlined (a copy of a length
      // known only at run time is a library call)
      for (index_t b = 0; b < count; ++b, to += rows) {
        const std::uint32_t* from = lines.data() + b * m + r0;
        if (rows == kMaxRows) {
          std::memcpy(to, from, kMaxRows * sizeof(std::uint32_t));
        } else if (rows == kMaxRows - 1) {
          std::memcpy(to, from, (kMaxRows - 1) * sizeof(std::uint32_t));
        } else {
          for (index_t i = 0; i < rows; ++i) to[i] = from[i];
        }
      }
    }
  });
}

void check_path(Bf16Path path) {
  if (!bf16_path_supported(path))
    throw ArgumentError(std::string("bf16 path '") + bf16_path_name(path) +
                        "' is not supported by this CPU/build");
}

void finish_row(const float* acc, index_t cols, index_t i, index_t j0, float* c32, bf16_bits* c16,
                index_t ldc, const Bf16Epilogue& ep, float* scratch) {
  if (c16 != nullptr && ep.bias == nullptr && ep.preact == nullptr &&
      ep.activation.kind == ActivationKind::linear) {  // the sums alone: rounded as they are
    row_ops().round_to_bf16(acc, c16 + i * ldc + j0, cols);
    return;
  }
  float* v = c32 != nullptr ? c32 + i * ldc + j0 : scratch;
  // one row loop of the ISA per step (the same sums in the same order: acc, + C, + b)
  if (ep.accumulate) {
    row_ops().add_rows(v, acc, cols);
  } else if (acc != v) {  // the tiles wrote into C itself when they could
    std::copy(acc, acc + cols, v);
  }
  if (ep.bias != nullptr) row_ops().add_rows(v, ep.bias + j0, cols);
  if (ep.preact != nullptr) std::copy(v, v + cols, ep.preact + i * ep.ld_preact + j0);
  apply_row_activation(v, cols, ep.activation);
  if (c16 != nullptr) row_ops().round_to_bf16(v, c16 + i * ldc + j0, cols);
}

}  // namespace

bool bf16_path_supported(Bf16Path path) {
  if (path == Bf16Path::emulated) return true;
  if (gemm::isa_choice().isa != gemm::Isa::avx512) return false;
  return path == Bf16Path::amx ? amx_support().bf16 : cpu_has_avx512_bf16();
}

const char* bf16_path_name(Bf16Path path) {
  return path == Bf16Path::amx           ? "amx"
         : path == Bf16Path::avx512_bf16 ? "avx512_bf16"
                                         : "emulated";
}

bool bf16_path_from_name(const std::string& name, Bf16Path* path) {
  if (name == "amx") {
    *path = Bf16Path::amx;
  } else if (name == "avx512_bf16") {
    *path = Bf16Path::avx512_bf16;
  } else if (name == "emulated") {
    *path = Bf16Path::emulated;
  } else {
    return false;
  }
  return true;
}

const Bf16Choice& bf16_choice() {
  static const Bf16Choice choice = choose();
  return choice;
}

namespace {

void check_product(Bf16Path path, const float* c32, const bf16_bits* c16,
                   const Bf16Epilogue& ep) {
  check_path(path);
  if ((c32 == nullptr) == (c16 == nullptr))
    throw ArgumentError("gemm_bf16: exactly one of the float32 and bf16 outputs");
  if (ep.accumulate && c32 == nullptr)
    throw ArgumentError("gemm_bf16: accumulate needs a float32 output");
  if (is_row_activation(ep.activation.kind))
    throw ArgumentError(
        "gemm_bf16: a row activation (softmax, log_softmax) is not an elementwise epilogue");
}

template <typename AT>
void run_gemm(Bf16Path path, index_t m, index_t n, index_t k, const AT* a, index_t lda,
              bool trans_a, const PackedBf16& b, float* c32, bf16_bits* c16, index_t ldc,
              const Bf16Epilogue& ep, int num_threads) {
  check_product(path, c32, c16, ep);
  if (b.k != k || b.n != n) throw ArgumentError("gemm_bf16: packed B does not match k and n");
  if (m <= 0 || n <= 0) return;
  const double flops = product_flops(m, n, k);
  std::vector<std::vector<float>> rows(static_cast<size_t>(std::max(num_threads, 1)));
  const bool flush = tiles_for(path).sets_mxcsr;
  // a float32 C without accumulate and of whole panels takes the sums in place
  const bool direct = c32 != nullptr && !ep.accumulate && n % kPanel == 0 && ldc >= n;
  // a row-major bf16 A of whole pairs is read in place by the paths that can
  const bool in_place = std::is_same_v<AT, bf16_bits> && !trans_a && k % 2 == 0;
  run_tiles<float>(
      m, b, tiles_for(path), flops, num_threads, kBlockPairs,
      [&](index_t r0, int count, std::uint32_t* out, index_t stride) {
        auto word_major = [&](std::uint32_t* to) {
          if constexpr (std::is_same_v<AT, float>) {
            thread_local std::vector<bf16_bits> row;
            pack_a(a, lda, trans_a, r0, count, k, to, row);
          } else {
            pack_a(a, lda, trans_a, r0, count, k, to);
          }
        };
        if (stride > 0) {
          pack_a_by_row(a, lda, trans_a, r0, count, k, out, stride, word_major);
        } else {
          word_major(out);
        }
      },
      [&](std::uint32_t* out, index_t row_tiles, int threads) {
        if (!trans_a) return false;
        pack_a_transposed(a, lda, m, k, row_tiles, out, threads);
        return true;
      },
      [&] { return FlushDenormals(flush); },
      [&](const float* acc, index_t cols, index_t i, index_t j0, int participant) {
        std::vector<float>& row = rows[static_cast<size_t>(participant)];
        if (c32 == nullptr && row.size() < static_cast<size_t>(cols)) row.resize(size_t(cols));
        finish_row(acc, cols, i, j0, c32, c16, ldc, ep, row.data());
      },
      direct ? c32 : nullptr, ldc, in_place ? a : nullptr,
      static_cast<index_t>(lda * sizeof(AT)), /*a_rows_padded=*/false,
      /*rows_by_copy=*/!trans_a);
}

// C (m, n) = op(A) @ B for one row tile (m <= kMaxRows) and a row-major B (k, n) read in
// place by the path's b_in_place tiles: a packed B would be read once, so packing it costs
// more than the product (1 x 784 x 256: the packing is most of the call). A's rows are
// joined into pair words first (m * (k + 1) / 2 words); the tasks are B's 32-column
// blocks, each finished by the usual epilogue. Each element is the chain of the packed
// tiles, so the bits are theirs for any thread count.
void product_b_in_place(const Bf16Tiles& tiles, index_t m, index_t n, index_t k,
                        const bf16_bits* a, index_t lda, bool trans_a, const bf16_bits* b,
                        index_t ldb, float* c32, bf16_bits* c16, index_t ldc,
                        const Bf16Epilogue& ep, int num_threads) {
  const index_t words = (k + 1) / 2;
  thread_local gemm::Scratch t_words;
  auto* a_words = static_cast<std::uint32_t*>(t_words.get(buffer_bytes(m, words, 4)));
  for (index_t i = 0; i < m; ++i) {
    std::uint32_t* row = a_words + i * words;
    for (index_t q = 0; q < words; ++q) {
      const index_t p = 2 * q;
      const std::uint32_t even = trans_a ? a[p * lda + i] : a[i * lda + p];
      const std::uint32_t odd =
          p + 1 < k ? (trans_a ? a[(p + 1) * lda + i] : a[i * lda + p + 1]) : 0u;
      row[q] = even | odd << 16;
    }
  }
  // tasks of `wide` panels (the last one's panels one at a time)
  const int wide = wide_panels(static_cast<int>(m));
  const index_t panels = (n + kPanel - 1) / kPanel;
  const index_t tasks = (panels + wide - 1) / wide;
  // threads by the bytes of B read: the product is bound by that stream
  const int threads = threads_for_work(num_threads, 2.0 * double(k) * double(n), 1 << 17);
  struct Scratch {
    std::vector<float> acc, row;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(std::max(threads, 1)));
  parallel_tasks(tasks, threads, [&](int participant, index_t task) {
    Scratch& s = scratch[static_cast<size_t>(participant)];
    const index_t width = index_t(wide) * kPanel;
    s.acc.resize(static_cast<size_t>(m * width));
    s.row.resize(static_cast<size_t>(width));
    const index_t j0 = task * width;
    const index_t cols = std::min<index_t>(width, n - j0);
    auto run = [&](const Bf16Tiles::RowMajorBFn tile, index_t offset, index_t count) {
      tile(k, a_words, words, k > 0 ? b + j0 + offset : b, ldb, static_cast<int>(count),
           s.acc.data() + offset, width);
    };
    if (cols == width) {
      run(tiles.b_in_place_wide[m], 0, cols);
    } else {
      for (index_t offset = 0; offset < cols; offset += kPanel)
        run(tiles.b_in_place[m], offset, std::min<index_t>(kPanel, cols - offset));
    }
    for (index_t i = 0; i < m; ++i)
      finish_row(s.acc.data() + i * width, cols, i, j0, c32, c16, ldc, ep, s.row.data());
  });
  t_words.trim();
}

// C (m, n) with few columns (transposed_is_cheaper) as C^T = op(B)^T op(A)^T: op(B)^T is
// the row tiles' A and op(A)^T the packed B, so that the many rows of C fill the 32-column
// panels which its few columns would mostly leave as padding. Each sum is the same chain of
// the same exact products (a bf16 product is exact in float32 and the pair rule adds a pair's
// two products in a fixed order), so the bits are the direct product's; the sums are then
// finished by row, as the direct product finishes them.
template <typename AT>
void product_transposed(Bf16Path path, index_t m, index_t n, index_t k, const AT* a,
                        index_t lda, bool trans_a, const bf16_bits* b, index_t ldb, bool trans_b,
                        float* c32, bf16_bits* c16, index_t ldc, const Bf16Epilogue& ep,
                        int num_threads) {
  thread_local PackedBf16 t_at;
  thread_local gemm::Scratch t_ct;
  pack_bf16_into(&t_at, a, lda, !trans_a, k, m, num_threads);
  auto* ct = static_cast<float*>(t_ct.get(buffer_bytes(n, m, sizeof(float))));
  run_gemm(path, n, m, k, b, ldb, !trans_b, t_at, ct, nullptr, m, Bf16Epilogue{}, num_threads);
  constexpr index_t kRows = 64;  // rows of C per task
  const int threads = threads_for_work(num_threads, double(m) * double(n), 1 << 14);
  std::vector<std::vector<float>> rows(static_cast<size_t>(std::max(threads, 1)));
  parallel_tasks((m + kRows - 1) / kRows, threads, [&](int participant, index_t task) {
    std::vector<float>& row = rows[static_cast<size_t>(participant)];
    row.resize(static_cast<size_t>(2 * n));
    for (index_t i = task * kRows; i < std::min(m, (task + 1) * kRows); ++i) {
      for (index_t j = 0; j < n; ++j) row[size_t(j)] = ct[j * m + i];
      finish_row(row.data(), n, i, 0, c32, c16, ldc, ep, row.data() + n);
    }
  });
  t_ct.trim();
  trim_kept(&t_at);
}

}  // namespace

void gemm_bf16_with_path(Bf16Path path, index_t m, index_t n, index_t k, const bf16_bits* a,
                         index_t lda, bool trans_a, const PackedBf16& b, float* c32,
                         bf16_bits* c16, index_t ldc, const Bf16Epilogue& ep, int num_threads) {
  run_gemm(path, m, n, k, a, lda, trans_a, b, c32, c16, ldc, ep, num_threads);
}

void gemm_bf16_with_path(Bf16Path path, index_t m, index_t n, index_t k, const float* a,
                         index_t lda, bool trans_a, const PackedBf16& b, float* c32,
                         bf16_bits* c16, index_t ldc, const Bf16Epilogue& ep, int num_threads) {
  run_gemm(path, m, n, k, a, lda, trans_a, b, c32, c16, ldc, ep, num_threads);
}

int gemm_bf16_threads(index_t m, index_t n, index_t k, int num_threads) {
  return tile_threads(tiles_for(bf16_choice().path), m, product_flops(m, n, k), num_threads);
}

void gemm_bf16(index_t m, index_t n, index_t k, const bf16_bits* a, index_t lda, bool trans_a,
               const PackedBf16& b, float* c32, bf16_bits* c16, index_t ldc,
               const Bf16Epilogue& epilogue, int num_threads) {
  run_gemm(bf16_choice().path, m, n, k, a, lda, trans_a, b, c32, c16, ldc, epilogue,
           num_threads);
}

void gemm_bf16(index_t m, index_t n, index_t k, const float* a, index_t lda, bool trans_a,
               const PackedBf16& b, float* c32, bf16_bits* c16, index_t ldc,
               const Bf16Epilogue& epilogue, int num_threads) {
  run_gemm(bf16_choice().path, m, n, k, a, lda, trans_a, b, c32, c16, ldc, epilogue,
           num_threads);
}

void pack_bf16_into(PackedBf16* out, const bf16_bits* b, index_t ld, bool transposed, index_t k,
                    index_t n, int num_threads) {
  const index_t words = (k + 1) / 2;
  if (!transposed) {  // rows 2q and 2q + 1 joined by the ISA's row operation
    pack_panels_by_rows(out, k, n, words, num_threads, [&](index_t q, std::uint32_t* dst) {
      const bf16_bits* lo = b + 2 * q * ld;
      row_ops().join_pairs_panels(lo, 2 * q + 1 < k ? lo + ld : nullptr, n, dst,
                                  out->panel_stride());
    });
    return;
  }
  // column j of B is row j of b
  pack_panels_with(out, k, n, words, num_threads, [&](std::uint32_t* dst, index_t j0, index_t cols) {
    const bf16_bits* row[kPanel];
    for (index_t j = 0; j < cols; ++j) row[j] = b + (j0 + j) * ld;
    panel_from_rows(row, cols, k, dst);
  });
}

void panel_from_rows(const bf16_bits* const* rows, index_t cols, index_t k, std::uint32_t* dst) {
  for (index_t j = 0; j < cols; j += 16)
    row_ops().word_major(reinterpret_cast<const void* const*>(rows + j),
                         static_cast<int>(std::min<index_t>(16, cols - j)), k / 2, dst + j,
                         kPanel);
  if (k % 2)
    for (index_t j = 0; j < cols; ++j) dst[(k / 2) * kPanel + j] = rows[j][k - 1];
}

void matmul_bf16(const Bf16Path* path, index_t m, index_t n, index_t k, const bf16_bits* a,
                 index_t lda, bool trans_a, const bf16_bits* b, index_t ldb, bool trans_b,
                 float* c32, bf16_bits* c16, index_t ldc, const Bf16Epilogue& epilogue,
                 int num_threads) {
  const Bf16Path chosen = path != nullptr ? *path : bf16_choice().path;
  check_product(chosen, c32, c16, epilogue);
  if (m <= 0 || n <= 0) return;
  const Bf16Tiles& tiles = tiles_for(chosen);
  if (!trans_b && m <= kMaxRows && tiles.b_in_place[m] != nullptr) {
    product_b_in_place(tiles, m, n, k, a, lda, trans_a, b, ldb, c32, c16, ldc, epilogue,
                       num_threads);
    return;
  }
  if (k > 0 && transposed_is_cheaper(m, n)) {
    product_transposed(chosen, m, n, k, a, lda, trans_a, b, ldb, trans_b, c32, c16, ldc,
                       epilogue, num_threads);
    return;
  }
  thread_local PackedBf16 t_b;
  // The threads may take B's columns in whole panels instead of the product's tasks: each
  // packs its own panels and multiplies them on one thread, so the packing runs in parallel
  // and no packed panel is read from another core's cache; each part reads all of A. Taken
  // where the product alone would leave threads idle (a few row tiles), and where A is no
  // larger than B (m <= n) with at least 4 panels a part. Each element is the same chain: the
  // same bits. Intel Xeon, AMX, 2 threads, bf16 out, medians: 64x784x256 42 -> 26 us,
  // 256x784x256 92 -> 74 us, 1024^3 1236 -> 1050 us; with m > n it was slower (1024x784x256
  // 220-240 -> 230-310 us, 4096x512x512 915-980 -> 920-1270 us), so those keep the tasks.
  const double flops = product_flops(m, n, k);
  const index_t panels = (n + kPanel - 1) / kPanel;
  index_t parts = 1;
  if (tile_threads(tiles, m, flops, num_threads) < num_threads) {
    parts = std::min<index_t>(num_threads, panels);
  } else if (m <= n) {
    parts = std::min<index_t>(num_threads, panels / 4);
  }
  if (parts > 1 && threads_for_work(int(parts), double(k) * double(n), 1 << 16) > 1) {
    parallel_for(parts, int(parts), [&](index_t part) {
      const index_t j0 = panels * part / parts * kPanel;
      const index_t j1 = std::min(n, panels * (part + 1) / parts * kPanel);
      Bf16Epilogue ep = epilogue;
      if (ep.bias != nullptr) ep.bias += j0;
      if (ep.preact != nullptr) ep.preact += j0;
      pack_bf16_into(&t_b, trans_b ? b + j0 * ldb : b + j0, ldb, trans_b, k, j1 - j0, 1);
      run_gemm(chosen, m, j1 - j0, k, a, lda, trans_a, t_b, c32 != nullptr ? c32 + j0 : nullptr,
               c16 != nullptr ? c16 + j0 : nullptr, ldc, ep, 1);
      trim_kept(&t_b);
    });
    return;
  }
  pack_bf16_into(&t_b, b, ldb, trans_b, k, n, num_threads);
  run_gemm(chosen, m, n, k, a, lda, trans_a, t_b, c32, c16, ldc, epilogue, num_threads);
  trim_kept(&t_b);
}

void pack_bf16_into(PackedBf16* out, const float* b, index_t ld, bool transposed, index_t k,
                    index_t n, int num_threads) {
  const index_t words = (k + 1) / 2;
  if (!transposed) {  // rows 2q and 2q + 1 of B rounded into pair words
    pack_panels_by_rows(out, k, n, words, num_threads, [&](index_t q, std::uint32_t* dst) {
      const float* lo = b + 2 * q * ld;
      row_ops().round_pairs_panels(lo, 2 * q + 1 < k ? lo + ld : nullptr, n, dst,
                                   out->panel_stride());
    });
    return;
  }
  // B(p, j) = b[j * ld + p]: column j of B is a row of b, rounded, then its pair words
  pack_panels_with(out, k, n, words, num_threads, [&](std::uint32_t* dst, index_t j0, index_t cols) {
    thread_local std::vector<bf16_bits> row;
    row.resize(static_cast<size_t>(k * 16));
    const bf16_bits* rounded[16];
    for (index_t j0b = 0; j0b < cols; j0b += 16) {  // 16 columns rounded, then written pair-major
      const index_t count = std::min<index_t>(16, cols - j0b);
      for (index_t j = 0; j < count; ++j) {
        row_ops().round_operand(b + (j0 + j0b + j) * ld, row.data() + k * j, k);
        rounded[j] = row.data() + k * j;
      }
      panel_from_rows(rounded, count, k, dst + j0b);
    }
  });
}

double bf16_peak_probe(index_t steps, int num_threads) {
  const TileSet<float>& tiles = tiles_for(bf16_choice().path);
  const FlushDenormals flush(tiles.sets_mxcsr);
  return run_probe(tiles, steps, num_threads);
}

void convert_to_bf16(const float* x, bf16_bits* y, index_t count, int num_threads) {
  constexpr index_t kChunk = 1 << 15;
  const index_t chunks = (count + kChunk - 1) / kChunk;
  parallel_for(chunks, threads_for_work(num_threads, double(count), kChunk), [&](index_t c) {
    const index_t end = std::min(count, (c + 1) * kChunk);
    row_ops().round_to_bf16(x + c * kChunk, y + c * kChunk, end - c * kChunk);
  });
}

void convert_from_bf16(const bf16_bits* x, float* y, index_t count, int num_threads) {
  constexpr index_t kChunk = 1 << 15;
  const index_t chunks = (count + kChunk - 1) / kChunk;
  parallel_for(chunks, threads_for_work(num_threads, double(count), kChunk), [&](index_t c) {
    const index_t end = std::min(count, (c + 1) * kChunk);
    row_ops().widen(x + c * kChunk, y + c * kChunk, end - c * kChunk);
  });
}

}  // namespace densekit::lowp
