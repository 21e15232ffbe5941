// The task loop shared by the low-precision products (bf16_gemm.cpp, int8_gemm.cpp): both pack
// B in panels of kPanel columns of 32-bit words (a bf16 pair or an int8 quad of k per column),
// pack each row tile of A as words too, and run a path's register tiles over k blocks into a
// task-local accumulator block that an epilogue then finishes row by row.
//
// Tasks are (column chunk, row tile), chunk-major, so a participant's consecutive tasks reuse
// one chunk of B from cache. Each accumulator is one chain over the k words in increasing order
// (partial sums between k blocks go through the accumulator block exactly), so the results do
// not depend on the thread count, the tiling or the blocking.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#include "activation_table.hpp"
#include "common.hpp"
#include "gemm/isa.hpp"
#include "gemm/scratch.hpp"
#include "lowp/row_ops.hpp"
#include "parallel.hpp"
#include "vecmath/scalar_activations.hpp"
#include "vecmath/vecmath.hpp"

namespace densekit::lowp {

constexpr int kPanel = static_cast<int>(kRowPanel);  // columns per packed panel of B
constexpr int kMaxRows = 14;   // rows per register tile
constexpr int kMaxBlockRows = 32;  // rows per block of the block tiles (AMX)
// The shortest row tile that run_tiles makes to give several threads equal numbers of them
constexpr index_t kMinEvenRows = 10;
// A packed panel's word rows are padded with zeros to a multiple of this (the AMX tiles read
// k in steps of 16 words); the other tiles read only the words there are.
constexpr index_t kPanelWordAlign = 16;
constexpr index_t padded_words(index_t words) {
  return (words + kPanelWordAlign - 1) / kPanelWordAlign * kPanelWordAlign;
}
// Products of at least this many FLOPs pack A in a pass of its own on several threads (see
// run_tiles).
constexpr double kPrepackFlops = 64e6;
// Panels per wide tile for thin row tiles (more independent accumulator chains).
constexpr int wide_panels(int rows) { return rows <= 2 ? 4 : rows <= 4 ? 3 : 1; }

// One path's tiles: C (rows x panels * kPanel, row stride ldc) [+]= the chain over `words` k
// words of A (packed: word q of row i at a[q * rows + i]) and B (panel p at b + p *
// panel_stride, word q at q * kPanel). narrow: one panel; wide: wide_panels(rows) panels.
template <typename Acc>
struct TileSet {
  using Fn = void (*)(index_t words, const std::uint32_t* a, const std::uint32_t* b,
                      index_t panel_stride, Acc* c, index_t ldc, bool load_c);
  Fn narrow[kMaxRows + 1] = {};
  Fn wide[kMaxRows + 1] = {};
  // The same with A read in place: word q of row i at bytes a + i * lda + 4q (any alignment).
  // Null where the path has none (then A is packed).
  using InPlaceFn = void (*)(index_t words, const void* a, index_t lda, const std::uint32_t* b,
                             index_t panel_stride, Acc* c, index_t ldc, bool load_c);
  InPlaceFn in_place_narrow[kMaxRows + 1] = {};
  InPlaceFn in_place_wide[kMaxRows + 1] = {};
  // C (rows x panels * kPanel) = the chain over k read from a row-major B of 16-bit pair
  // members in place, nothing packed: rows 2q and 2q + 1 of b (row stride ldb elements),
  // their first `cols` columns (the rest count as zero); A packed by row, word q of row i at
  // a[i * a_stride + q]. All the panels' columns of C are written. For one row tile, where a
  // packed B would be used once. One panel, or wide_panels(rows); null where the path has none.
  using RowMajorBFn = void (*)(index_t k, const std::uint32_t* a, index_t a_stride,
                               const void* b, index_t ldb, int cols, Acc* c, index_t ldc);
  RowMajorBFn b_in_place[kMaxRows + 1] = {};
  RowMajorBFn b_in_place_wide[kMaxRows + 1] = {};
  // Block tiles (AMX): C (rows x panels * kPanel) [+]= the chain over `words` k words (a
  // multiple of kPanelWordAlign, the panels' padded rows included) of A in rows (word q of row
  // i at a[i * a_stride + q], zeros past the product's words) and B (panel p at b + p *
  // panel_stride). rows <= kMaxBlockRows. Where set, they replace the register
  // tiles: row tiles of kMaxBlockRows rows, A packed by row, k blocks of whole kPanelWordAlign
  // steps. `release` ends a task's use of the tile registers (block keeps its configuration
  // until then).
  using BlockFn = void (*)(int rows, index_t panels, index_t words, const std::uint32_t* a,
                           index_t a_stride, const std::uint32_t* b, index_t panel_stride, Acc* c,
                           index_t ldc, bool load_c);
  BlockFn block = nullptr;
  index_t block_words = 0;  // the block tiles' k block, in place of the caller's
  void (*release)() = nullptr;
  bool sets_mxcsr = false;  // the tiles need DAZ and FTZ (x86 emulation of vdpbf16ps)
  // `steps` rounds of the path's multiply-adds on independent register chains, nothing from
  // memory: its arithmetic peak, for the benchmarks. Returns the operations done (a
  // multiply and an add count as two, as in FLOP counts of the products).
  double (*probe)(index_t steps) = nullptr;
};

// The emulated tiles of a product for the float32 engine's ISA (built once by the caller);
// avx2 / avx512 may be null where the build has no x86 kernels.
template <typename Acc>
TileSet<Acc> emulated_tiles(TileSet<Acc> (*portable)(), TileSet<Acc> (*avx2)(),
                            TileSet<Acc> (*avx512)()) {
  const gemm::Isa isa = gemm::isa_choice().isa;
  if (isa == gemm::Isa::avx512 && avx512 != nullptr) return avx512();
  if (isa == gemm::Isa::avx2 && avx2 != nullptr) return avx2();
  return portable();
}

// A probe's operations over `steps` rounds shared among num_threads threads (16 chunks per
// thread: however late a thread starts, the others take its share). The caller times it.
template <typename Acc>
double run_probe(const TileSet<Acc>& tiles, index_t steps, int num_threads) {
  const int threads = std::max(num_threads, 1);
  const index_t chunks = index_t(threads) * 16;
  std::vector<double> ops(static_cast<size_t>(chunks), 0.0);
  parallel_for(chunks, threads, [&](index_t i) {
    ops[size_t(i)] = tiles.probe(steps * (i + 1) / chunks - steps * i / chunks);
  });
  double total = 0.0;
  for (const double o : ops) total += o;
  return total;
}

// An allocator of 64-byte aligned storage: a tile row or a vector of 64 bytes then lies in one
// cache line. (A large std::vector's storage starts 16 bytes into a page, and every 64-byte
// row of an AMX tile load then straddles two lines: the tiles ran at half the rate.)
template <typename T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <typename U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t count) {
    const size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes > 0 ? bytes : 64);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};
template <typename T>
using AlignedVector = std::vector<T, CacheAligned<T>>;

inline bool cache_aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

// Packed B: panel p's words at data + p * panel_stride(), word rows [words,
// padded_words(words)) zero; 64-byte aligned (a panel's word rows are 128 bytes).
struct PackedPanels {
  index_t k = 0, n = 0;
  index_t words = 0, panels = 0;
  AlignedVector<std::uint32_t> data;
  index_t panel_stride() const { return padded_words(words) * kPanel; }
  const std::uint32_t* panel(index_t p) const {
    return data.data() + static_cast<size_t>(p * panel_stride());
  }
};

// A thread's kept packing buffer given back when it grew past gemm::Scratch::kMaxKept (as
// Scratch::trim does): a call of ordinary size costs no allocation, one huge call keeps nothing.
inline void trim_kept(PackedPanels* p) {
  if (p->data.size() * sizeof(std::uint32_t) > gemm::Scratch::kMaxKept) *p = PackedPanels{};
}

// Whether C (rows, cols) is better computed as C^T = B^T A^T: B's panels hold kPanel columns,
// so a product with few columns (a layer of a few units: 10 classes) spends most of its work
// on padding; transposed, those columns are the rows of a row tile and the many rows fill the
// panels. Taken when that is at most half the padded work. Depends on the shape alone.
inline bool transposed_is_cheaper(index_t rows, index_t cols) {
  const auto padded = [](index_t c) { return (c + kPanel - 1) / kPanel * kPanel; };
  return 2 * cols * padded(rows) <= rows * padded(cols);
}

// Whether a row tile's `rows` rows (14 for the register tiles, 32 for the AMX blocks) read in
// place, lda bytes apart, crowd into L1 sets: more than 8 of them (the ways of Zen 4's L1) on
// lines of one set, L1 having 64 sets of 64-byte lines (4 KiB apart) on both CPU kinds. A
// tile's lines then evict each other as B streams through: a bf16 A of 2048 columns (4 KiB
// rows) ran at 67% of the peak in place, 89% packed (Zen 4); checked over 14 rows only, 1024
// columns (2 KiB rows, 16 of 32 rows in one set) ran the AMX tiles at 60% of the packed rate.
inline bool rows_crowd_l1(index_t lda, index_t rows = kMaxRows) {
  int in_set[64] = {};
  for (index_t i = 0; i < rows; ++i)
    if (++in_set[((i * lda) >> 6) & 63] > 8) return true;
  return false;
}

// Rows of row tile rt when m rows are split into row_tiles tiles: [m rt / row_tiles, m (rt +
// 1) / row_tiles).
inline int tile_rows(index_t m, index_t row_tiles, index_t rt) {
  return static_cast<int>(m * (rt + 1) / row_tiles - m * rt / row_tiles);
}

// The work of a product of m x n outputs over k (an empty k counted as 1: its outputs are
// still written), for the thread choices.
inline double product_flops(index_t m, index_t n, index_t k) {
  return 2.0 * double(m) * double(n) * double(std::max<index_t>(k, 1));
}

// The threads run_tiles runs a product of m rows and `flops` on. The block tiles run a
// product ~5x faster than the register tiles, so a thread's share must be larger to pay for
// the region: 8 MFLOP, and 32 where there are fewer than two row tiles per thread and the
// threads split B's columns instead (Intel Xeon, AMX, dense bf16 2 threads against 1:
// 128x256x128 18 vs 15 us, 256x256x128 17 vs 27; 64x784x256 (2 row tiles) 34 vs 30,
// 128x784x256 47 vs 58).
template <typename Acc>
int tile_threads(const TileSet<Acc>& tiles, index_t m, double flops, int num_threads) {
  const bool blocks = tiles.block != nullptr;
  const index_t tile_height = blocks ? kMaxBlockRows : kMaxRows;
  const index_t row_tiles = (m + tile_height - 1) / tile_height;
  int threads = threads_for_work(num_threads, flops, blocks ? 8e6 : 4e6);
  if (blocks && row_tiles < 2 * index_t(threads))
    threads = std::min(threads, threads_for_work(num_threads, flops, 32e6));
  return threads;
}

// pack_a(r0, rows, out, stride): rows [r0, r0 + rows) of A as words into out: word-major
// (word q of row i at out[q * rows + i]) when stride is 0, else by row (word q of row i at
// out[i * stride + q], zeros from the product's words to stride: the block tiles);
// pack_whole(out, row_tiles, threads): every row tile at once (row tile rt, rows
// tile_rows(m, row_tiles, rt), at out + words * r0), returning false where A has no such pass
// (then row tiles are packed one by one);
// guard(): an object alive while the tiles run (e.g. an MXCSR mode);
// finish(acc, cols, i, j0, participant): row i's accumulators for columns [j0, j0 + cols).
// direct (ldc): the tiles accumulate straight into this (m, n) array, n a multiple of kPanel,
// and finish gets its rows; null: into task-local blocks.
// a_in_place (lda bytes): A's rows already hold their words in order (word q of row i at
// a_in_place + i * lda + 4q); where the path has tiles that read A in place and the rows do not
// crowd L1 (rows_crowd_l1), nothing is packed. The block tiles read A in place when its rows
// hold whole steps of kPanelWordAlign words: words is a multiple of it, or a_rows_padded (each
// row holds padded_words(words) words, the padding's products with B's zero padding zero).
// rows_by_copy: pack_a with a stride copies A's rows as they are stored (a row-major A: rounded
// from float32, or bf16 not read in place); where the path has tiles that read A in place,
// the register tiles then read such copies (rows an odd number of cache lines apart, so that
// none crowd L1) instead of word-major tiles, whose packing also transposes blocks of 16 x 16
// words (measured in README.md).
template <typename Acc, class PackA, class PackWhole, class Guard, class Finish>
void run_tiles(index_t m, const PackedPanels& b, const TileSet<Acc>& tiles, double flops,
               int num_threads, index_t block_words, PackA&& pack_a, PackWhole&& pack_whole,
               Guard&& guard, Finish&& finish, Acc* direct = nullptr, index_t direct_ldc = 0,
               const void* a_in_place = nullptr, index_t a_lda = 0, bool a_rows_padded = false,
               bool rows_by_copy = false) {
  if (m <= 0 || b.n <= 0) return;
  const index_t words = b.words;
  const bool blocks = tiles.block != nullptr;
  const index_t tile_height = blocks ? kMaxBlockRows : kMaxRows;
  // the block tiles read k in whole steps of kPanelWordAlign words: A in place only when its
  // rows hold whole steps (the padding of packed A is zero)
  const bool in_place = a_in_place != nullptr && !rows_crowd_l1(a_lda, tile_height) &&
                        (blocks ? (words % kPanelWordAlign == 0 || a_rows_padded) &&
                                      cache_aligned(a_in_place) && a_lda % 64 == 0
                                : tiles.in_place_narrow[1] != nullptr);
  // the block tiles accumulate in C itself only where its tile rows are whole cache lines
  if (blocks && direct != nullptr && !(cache_aligned(direct) && direct_ldc * sizeof(Acc) % 64 == 0))
    direct = nullptr;
  // the register tiles reading copied rows of A in place (rows_by_copy)
  const bool copied_rows =
      !in_place && rows_by_copy && !blocks && words > 0 && tiles.in_place_narrow[1] != nullptr;
  // packed A's row stride (blocks, copied rows): whole steps, and an odd number of cache lines,
  // so that the rows of a tile spread over L1's sets
  index_t a_stride = blocks || copied_rows ? padded_words(words) : 0;
  if ((blocks || copied_rows) && (a_stride / kPanelWordAlign) % 2 == 0)
    a_stride += kPanelWordAlign;
  // where the tiles that read A in rows find a tile's rows: A itself, a whole copy of A (set
  // below) or the task's copy of its row tile, rows_lda bytes apart
  const bool rows_in_place = in_place || copied_rows;
  const unsigned char* a_rows_base =
      in_place ? static_cast<const unsigned char*>(a_in_place) : nullptr;
  const index_t rows_lda = in_place ? a_lda : a_stride * index_t(sizeof(std::uint32_t));
  index_t row_tiles = (m + tile_height - 1) / tile_height;
  const int threads = tile_threads(tiles, m, flops, num_threads);
  // On several threads the register tiles' row tiles come in a multiple of the thread count
  // where each stays at least kMinEvenRows tall, and then every task spans the chunk of B's
  // columns that L2 holds, rather than B being split into more chunks for more tasks: a row
  // tile left over would run on one thread while the others wait, and each column chunk would
  // pack A's row tile again (measured in README.md).
  bool even_rows = false;
  if (!blocks && threads > 1) {
    const index_t even = (row_tiles + threads - 1) / threads * threads;
    if (m >= even * kMinEvenRows) row_tiles = even;
    even_rows = row_tiles % threads == 0;
  }
  // Columns per task: as many panels as keep a chunk of B within about half of L2, at least
  // 8, but, where the row tiles do not come evenly, enough chunks for every thread. At least
  // 16 for the block tiles: B streams from L2 through them while each k block of A stays in
  // L1, so the more panels a k block of A serves the less is read from L2 per product (matmul
  // bf16 4096x512x512, 1 thread: 8 panels 950, 16 panels 1110 GFLOP/s; Intel Xeon, AMX).
  const index_t panel_bytes = std::max<index_t>(words, 1) * kPanel * index_t(sizeof(std::uint32_t));
  index_t chunk_panels = std::max<index_t>(blocks ? 16 : 8, (index_t(512) << 10) / panel_bytes);
  // For the block tiles, at most 1 MiB of B (half of L2 on the CPUs with AMX) all the same:
  // with a long k, 16 panels no longer stay in L2 while the row tiles pass over them (k =
  // 4096: 4 MiB of B read from memory by every row tile). Intel Xeon, AMX, matmul bf16
  // 512x4096x512 595 -> 766 GFLOP/s on 1 thread, 849 -> 1275 on 2; dense bf16 backward
  // 4096x512x512 dw 7.3 -> 4.5 ms (1 thread); 512 KiB was worse for k = 8192 (one panel a
  // chunk: 619 -> 444 GFLOP/s), 2 MiB gained little; k <= 1024 is unchanged.
  if (blocks)
    chunk_panels = std::min(chunk_panels, std::max<index_t>(1, (index_t(1) << 20) / panel_bytes));
  const index_t wanted_chunks =
      even_rows ? 1 : (4 * index_t(threads) + row_tiles - 1) / row_tiles;
  chunk_panels = std::max<index_t>(
      1, std::min(chunk_panels, (b.panels + wanted_chunks - 1) / wanted_chunks));
  const index_t kChunkPanels = chunk_panels;
  const index_t chunks = (b.panels + kChunkPanels - 1) / kChunkPanels;
  const index_t panel_stride = b.panel_stride();
  // k blocks of equal size, at most block_words each (no short last block); the block tiles'
  // of whole steps over the padded words
  const index_t chain_words = blocks ? padded_words(words) : words;
  if (blocks) block_words = tiles.block_words;
  const index_t k_blocks = std::max<index_t>(1, (chain_words + block_words - 1) / block_words);
  index_t kq_block = std::max<index_t>(1, (chain_words + k_blocks - 1) / k_blocks);
  if (blocks) kq_block = padded_words(kq_block);
  struct Scratch {
    AlignedVector<std::uint32_t> a;
    AlignedVector<Acc> acc;
    index_t a_row_tile = -1;  // the row tile `a` holds (a participant's tasks often repeat one)
  };
  std::vector<Scratch> scratch(static_cast<size_t>(std::max(threads, 1)));
  // A is packed once for all chunks (row tile rt at words * r0) when that copy stays within
  // 64 MiB and either pack_whole has a pass over all of A or there are several chunks and
  // the product runs on one thread or is large (kPrepackFlops); otherwise each task packs
  // its row tile. A separate pass saves the chunks' repacking but is a parallel region of its
  // own, and a task then reads its packed tile from another core's cache: on several threads
  // a small product loses more by that than the repacking costs, while on one thread the
  // pass costs nothing (measured: README.md).
  // The copy lives in the calling thread's kept scratch (a fresh one each call costs its page
  // faults).
  thread_local gemm::Scratch t_packed_a;
  std::uint32_t* packed_a = nullptr;
  bool prepacked = false;
  // A's row tile rt in the packed copy (word-major: words per row, by row: a_stride)
  const index_t row_words = blocks || copied_rows ? a_stride : words;
  if (!in_place && words > 0 &&
      double(m) * double(row_words) * sizeof(std::uint32_t) <= double(64 << 20)) {
    packed_a = static_cast<std::uint32_t*>(t_packed_a.get(buffer_bytes(m, row_words, 4)));
    prepacked = !blocks && !copied_rows && pack_whole(packed_a, row_tiles, threads);
    if (!prepacked && chunks > 1 && (threads == 1 || flops >= kPrepackFlops)) {
      parallel_for(row_tiles, threads, [&](index_t rt) {
        const index_t r0 = m * rt / row_tiles;
        pack_a(r0, tile_rows(m, row_tiles, rt), packed_a + row_words * r0, a_stride);
      });
      prepacked = true;
    }
    if (prepacked && copied_rows) a_rows_base = reinterpret_cast<const unsigned char*>(packed_a);
  }
  parallel_tasks(row_tiles * chunks, threads, [&](int participant, index_t task) {
    Scratch& s = scratch[static_cast<size_t>(participant)];
    const index_t chunk = task / row_tiles, rt = task % row_tiles;
    const index_t r0 = m * rt / row_tiles;
    const int rows = tile_rows(m, row_tiles, rt);
    const index_t p0 = chunk * kChunkPanels;
    const index_t panels = std::min(kChunkPanels, b.panels - p0);
    const index_t width = panels * kPanel;
    if (!prepacked && !in_place)
      s.a.resize(static_cast<size_t>(std::max<index_t>(row_words, 1) * rows));
    // the tiles' first k block overwrites the accumulators: zeros only where k is empty
    Acc* acc = nullptr;
    index_t ld = width;
    if (direct != nullptr) {
      acc = direct + r0 * direct_ldc + p0 * kPanel;
      ld = direct_ldc;
      if (words == 0)
        for (int i = 0; i < rows; ++i) std::fill(acc + i * ld, acc + i * ld + width, Acc(0));
    } else {
      if (words > 0)
        s.acc.resize(static_cast<size_t>(rows * width));
      else
        s.acc.assign(static_cast<size_t>(rows * width), Acc(0));
      acc = s.acc.data();
    }
    if (words > 0) {
      const std::uint32_t* a_tile = nullptr;
      if (!in_place) {
        a_tile = prepacked ? packed_a + row_words * r0 : s.a.data();
        if (!prepacked && s.a_row_tile != rt) {
          pack_a(r0, rows, s.a.data(), a_stride);
          s.a_row_tile = rt;
        }
      }
      // the tile's rows, rows_lda bytes apart, for the tiles that read A in rows (the block
      // tiles, and the register tiles that read A in place)
      const unsigned char* tile_rows_at = a_rows_base != nullptr
                                              ? a_rows_base + r0 * rows_lda
                                              : reinterpret_cast<const unsigned char*>(a_tile);
      [[maybe_unused]] const auto mode = guard();
      if (blocks) {
        const auto* a_rows = reinterpret_cast<const std::uint32_t*>(tile_rows_at);
        for (index_t q0 = 0; q0 < chain_words; q0 += kq_block)
          tiles.block(rows, panels, std::min(kq_block, chain_words - q0), a_rows + q0,
                      rows_lda / 4, b.panel(p0) + q0 * kPanel, panel_stride, acc, ld, q0 > 0);
        tiles.release();
      } else {
        const int wide = wide_panels(rows);
        // the tile of `count` panels (1 or wide) at panel p over k block [q0, q0 + kq)
        auto run = [&](int count, index_t p, index_t q0, index_t kq) {
          const std::uint32_t* bq = b.panel(p0 + p) + q0 * kPanel;
          if (rows_in_place) {
            (count > 1 ? tiles.in_place_wide : tiles.in_place_narrow)[rows](
                kq, tile_rows_at + 4 * q0, rows_lda, bq, panel_stride, acc + p * kPanel, ld,
                q0 > 0);
          } else {
            (count > 1 ? tiles.wide : tiles.narrow)[rows](kq, a_tile + q0 * rows, bq,
                                                          panel_stride, acc + p * kPanel, ld,
                                                          q0 > 0);
          }
        };
        for (index_t q0 = 0; q0 < words; q0 += kq_block) {
          const index_t kq = std::min(kq_block, words - q0);
          index_t p = 0;
          if (wide > 1)
            for (; p + wide <= panels; p += wide) run(wide, p, q0, kq);
          for (; p < panels; ++p) run(1, p, q0, kq);
        }
      }
    }
    const index_t j0 = p0 * kPanel;
    const index_t cols = std::min(width, b.n - j0);
    for (int i = 0; i < rows; ++i) finish(acc + i * ld, cols, r0 + i, j0, participant);
  });
  t_packed_a.trim();
}

// act(v) in place over a finished row: relu and leaky_relu as the ISA's row loops (a switch
// per element does not vectorise), the others through the vector math where it has them;
// the same values as activation_forward.
inline void apply_row_activation(float* v, index_t cols, const Activation& act) {
  const float alpha = static_cast<float>(act.alpha);
  switch (act.kind) {
    case ActivationKind::linear: return;
    case ActivationKind::relu:
      row_ops().relu_row(v, cols);
      return;
    case ActivationKind::leaky_relu:
      row_ops().leaky_relu_row(v, cols, alpha);
      return;
    default:
      if (!vecmath::vector_activation<float>(v, nullptr, v, cols, act))
        for (index_t j = 0; j < cols; ++j) v[j] = scalar::forward(act.kind, alpha, v[j]);
  }
}

// p's shape for B (k, n) in panels of `words` words per column, its storage resized (reused
// when it is large enough). False when there is nothing to write, however many panels or words
// the other extent asks for.
inline bool size_panels(PackedPanels* p, index_t k, index_t n, index_t words) {
  p->k = k;
  p->n = n;
  p->words = words;
  p->panels = (n + kPanel - 1) / kPanel;
  p->data.resize(buffer_bytes(p->panel_stride(), p->panels, 1));
  // the padding word rows, which no packing writes
  if (words > 0 && padded_words(words) > words)
    for (index_t panel = 0; panel < p->panels; ++panel)
      std::fill(p->data.data() + panel * p->panel_stride() + words * kPanel,
                p->data.data() + (panel + 1) * p->panel_stride(), 0u);
  return p->panels > 0 && words > 0;
}

// B (k, n) into p in panels of `words` words per column: fill(dst, j0, cols) writes the words
// of columns [j0, j0 + cols) of one panel (word q of column j0 + c at dst[q * kPanel + c]); the
// columns past n are zero. Parallel over panels; p's storage is reused when it is large enough
// (a weight packed again after each update costs no allocation).
template <class FillPanel>
void pack_panels_with(PackedPanels* p, index_t k, index_t n, index_t words, int num_threads,
                      FillPanel&& fill) {
  if (!size_panels(p, k, n, words)) return;
  const int threads = threads_for_work(num_threads, double(k) * double(n), 1 << 16);
  std::uint32_t* base = p->data.data();
  parallel_for(p->panels, threads, [&](index_t panel) {
    std::uint32_t* dst = base + panel * p->panel_stride();
    const index_t j0 = panel * kPanel;
    const index_t cols = std::min<index_t>(kPanel, n - j0);
    if (cols < kPanel) std::fill(dst, dst + words * kPanel, 0u);
    fill(dst, j0, cols);
  });
}

// The same one word row at a time: row(q, dst) writes word q of every column, panel p's at
// dst + p * p->panel_stride() (and zeros past n). B's rows are read whole and in order (a panel
// at a time would read 32 columns of every row). Parallel over blocks of word rows.
template <class WordRow>
void pack_panels_by_rows(PackedPanels* p, index_t k, index_t n, index_t words, int num_threads,
                         WordRow&& row) {
  if (!size_panels(p, k, n, words)) return;
  constexpr index_t kBlock = 16;
  const int threads = threads_for_work(num_threads, double(k) * double(n), 1 << 16);
  std::uint32_t* base = p->data.data();
  parallel_for((words + kBlock - 1) / kBlock, threads, [&](index_t block) {
    for (index_t q = block * kBlock; q < std::min(words, (block + 1) * kBlock); ++q)
      row(q, base + q * kPanel);
  });
}

// The same with word(q, j), the word q of column j, for each word.
template <class Word>
void pack_panels_into(PackedPanels* p, index_t k, index_t n, index_t words, int num_threads,
                      Word&& word) {
  pack_panels_with(p, k, n, words, num_threads, [&](std::uint32_t* dst, index_t j0, index_t cols) {
    for (index_t q = 0; q < words; ++q)
      for (index_t j = 0; j < cols; ++j) dst[q * kPanel + j] = word(q, j0 + j);
  });
}

template <class Word>
PackedPanels pack_panels(index_t k, index_t n, index_t words, int num_threads, Word&& word) {
  PackedPanels p;
  pack_panels_into(&p, k, n, words, num_threads, std::forward<Word>(word));
  return p;
}

}  // namespace densekit::lowp
