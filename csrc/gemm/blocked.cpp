// The blocked product: blocking, packing, task split and epilogue (see gemm.hpp).
//
// C is cut into tasks (a block of row tiles x a block of column panels); threads take tasks
// from a shared counter, so there are no barriers and a thread slowed by another process on
// its core just takes fewer tasks. Each task runs, with buffers of its thread:
//   for each k block of kc (kc from k alone)
//     pack its B block (kc x up to nc_max columns: stays in L2), unless it is small and
//       read once per row tile, when it is read in place, or was packed beforehand (pack_b)
//       for a product of a few row tiles, when that copy is read
//     for each row tile (up to mr rows; A micro-panel packed or read in place: in L1)
//       for each nr-column panel: microkernel, bias and activation on the last k block
// None of these choices changes a bit of C (see microkernels.hpp).
#include "blocked.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "parallel.hpp"
#include "scratch.hpp"
#include "vecmath/vecmath.hpp"

namespace densekit::gemm {

namespace {

// DENSEKIT_GEMM_TUNE's keys and the fields they set.
struct TuningKey {
  const char* key;
  void (*set)(Tuning& t, double value);
};

constexpr TuningKey kTuningKeys[] = {
    {"kc", [](Tuning& t, double v) { t.kc_max = static_cast<index_t>(v); }},
    {"nc", [](Tuning& t, double v) { t.nc_max = static_cast<index_t>(v); }},
    {"grain", [](Tuning& t, double v) { t.grain = v; }},
    {"packb", [](Tuning& t, double v) { t.pack_b = static_cast<int>(v); }},
    {"packa", [](Tuning& t, double v) { t.pack_a = static_cast<int>(v); }},
    {"swap", [](Tuning& t, double v) { t.swap = static_cast<int>(v); }},
    {"tasks", [](Tuning& t, double v) { t.tasks_per_thread = static_cast<int>(v); }},
    {"align", [](Tuning& t, double v) { t.align = static_cast<int>(v); }},
    {"columns", [](Tuning& t, double v) { t.split_columns = static_cast<int>(v); }},
    {"even", [](Tuning& t, double v) { t.even_tiles = static_cast<int>(v); }},
};

[[noreturn]] void tuning_fail(const std::string& what) {
  std::string known;
  for (const TuningKey& entry : kTuningKeys)
    known += std::string(known.empty() ? "" : ", ") + entry.key;
  throw ArgumentError("DENSEKIT_GEMM_TUNE: " + what + " (known keys: " + known +
                      "; e.g. DENSEKIT_GEMM_TUNE=kc=384,packb=1)");
}

// "key=value,key=value" (empty items are skipped); an unknown key or a value that is not a
// number throws ArgumentError.
Tuning parse_tuning(const std::string& text) {
  Tuning t;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) tuning_fail("item '" + item + "' is not key=value");
    const std::string key = item.substr(0, eq);
    const std::string value_text = item.substr(eq + 1);
    const TuningKey* entry = nullptr;
    for (const TuningKey& candidate : kTuningKeys)
      if (key == candidate.key) entry = &candidate;
    if (entry == nullptr) tuning_fail("unknown key '" + key + "'");
    char* parsed_end = nullptr;
    const double value = std::strtod(value_text.c_str(), &parsed_end);
    if (value_text.empty() || parsed_end != value_text.c_str() + value_text.size() ||
        !std::isfinite(value))
      tuning_fail("key '" + key + "' has value '" + value_text + "', expected a number");
    entry->set(t, value);
  }
  return t;
}

}  // namespace

const Tuning& tuning() {
  static const Tuning t = [] {
    const char* env = std::getenv("DENSEKIT_GEMM_TUNE");
    return env == nullptr ? Tuning{} : parse_tuning(env);
  }();
  return t;
}

void read_tuning() { tuning(); }

namespace {

constexpr size_t kAlign = 64;
constexpr index_t kTileGroup = 8;  // row tiles of a transposed A packed together
thread_local Scratch t_scratch;

// Everything a call decides before its threads start. The output is cut into tasks_m x
// tasks_n tasks of near-equal numbers of row tiles and column panels (at most
// tiles_per_task and panels_per_task); threads take tasks from a shared counter (a thread
// slowed by another process on its core simply takes fewer).
template <typename T>
struct Plan {
  const KernelFamily<T>* kernels = nullptr;
  index_t m = 0, n = 0, k = 0;
  int mr = 1, nr = 1;         // tile class in use
  index_t m_tiles = 0;        // row tiles of near-equal height (<= mr)
  index_t n_panels = 0;       // column panels of nr (the first and last may be narrower)
  index_t lead = 0;           // columns of a narrow first panel that 64-byte-aligns the rest
  index_t kc = 0;             // k block (the last may be shorter)
  index_t tiles_per_task = 1;
  index_t panels_per_task = 1;
  index_t tasks_m = 1, tasks_n = 1;
  bool pack_a = true;
  bool pack_b = true;
  const PackedB<T>* packed_b = nullptr;  // B packed beforehand (pack_b), read instead of packing
  bool edges = false;         // B in place, tiles with masked edges (see TileArgs)
  int head = 0;               // with edges: lanes before column 0 in its vector of B
  int threads = 1;
  TileActivation tile_act = TileActivation::linear;
  bool slow_act = false;      // activation applied by the driver after the tile is stored:
  // with the ISA's vector math (apply), or, when null, with scalar::forward
  void (*apply)(T*, const T*, index_t, ActivationKind, T) = nullptr;
  size_t a_buffer = 0;        // elements per thread, each rounded to whole cache lines
  size_t b_buffer = 0;
  size_t edge_buffer = 0;
};

template <typename T>
void tile_rows(const Plan<T>& plan, index_t tile, index_t* i0, int* rows) {
  const index_t base = plan.m / plan.m_tiles;
  const index_t extra = plan.m % plan.m_tiles;
  *i0 = tile * base + std::min(tile, extra);
  *rows = static_cast<int>(base + (tile < extra ? 1 : 0));
}

inline index_t panel_count(index_t n, index_t nr, index_t lead) {
  return lead == 0 ? ceil_div(n, nr) : 1 + ceil_div(n - lead, nr);
}

inline index_t start_of_panel(index_t p, index_t n, index_t nr, index_t lead) {
  const index_t start = lead == 0 ? p * nr : (p == 0 ? 0 : lead + (p - 1) * nr);
  return std::min(start, n);
}

// The task grid (tasks_m row blocks x tasks_n column blocks, near-equal numbers of tiles and
// panels) for a given lead: column blocks of at most nc_max columns (a packed B block of
// 256 x 1024 floats, 1 MiB, stays in L2), row blocks of at least 8 tiles when B is packed
// (its packing is repeated per row block), at most tasks_per_thread tasks per thread.
// Returns the load of the busiest thread in tile x column units, the smallest found; ties go
// to fewer tasks (less packing), then to fewer column blocks (each A micro-panel then serves
// more panels). Balance matters more than task count: one balanced task per thread beats
// several (README.md, "Measurements behind the plan").
template <typename T>
index_t choose_tasks(const Plan<T>& plan, index_t lead, int threads, index_t* tasks_m_out,
                     index_t* tasks_n_out) {
  const Tuning& tune = tuning();
  const index_t n_panels = panel_count(plan.n, plan.nr, lead);
  const index_t nc_max = tune.nc_max * 4 / index_t(sizeof(T));
  const index_t max_panels = std::max<index_t>(1, nc_max / plan.nr);
  const index_t min_tasks_n = ceil_div(n_panels, max_panels);
  const index_t min_tiles = plan.pack_b ? std::min<index_t>(8, plan.m_tiles) : 1;
  const index_t max_tasks =
      std::max(min_tasks_n, std::max<index_t>(1, index_t(tune.tasks_per_thread) * threads));
  index_t best_cost = -1, best_m = 1, best_n = min_tasks_n;
  for (index_t tasks_m = 1; tasks_m <= std::max<index_t>(1, plan.m_tiles / min_tiles); ++tasks_m) {
    for (index_t tasks_n = min_tasks_n; tasks_n <= n_panels; ++tasks_n) {
      const index_t tasks = tasks_m * tasks_n;
      if (tasks > max_tasks) break;
      index_t widest = 0;
      for (index_t block = 0; block < tasks_n; ++block) {
        const index_t begin = start_of_panel(n_panels * block / tasks_n, plan.n, plan.nr, lead);
        const index_t end = start_of_panel(n_panels * (block + 1) / tasks_n, plan.n, plan.nr, lead);
        widest = std::max(widest, end - begin);
      }
      // A row tile costs about half a panel besides its panels (its A micro-panel, calls).
      const index_t cost =
          ceil_div(tasks, threads) * ceil_div(plan.m_tiles, tasks_m) * (widest + plan.nr / 2);
      const index_t best_tasks = best_m * best_n;
      if (best_cost < 0 || cost < best_cost ||
          (cost == best_cost &&
           (tasks < best_tasks ||
            (tasks == best_tasks && (tune.split_columns ? tasks_n > best_n : tasks_n < best_n))))) {
        best_cost = cost;
        best_m = tasks_m;
        best_n = tasks_n;
      }
    }
  }
  *tasks_m_out = best_m;
  *tasks_n_out = best_n;
  return best_cost;
}

// First column of panel p (p <= n_panels; panel n_panels starts at n).
template <typename T>
index_t panel_start(const Plan<T>& plan, index_t p) {
  return start_of_panel(p, plan.n, plan.nr, plan.lead);
}

// Columns to skip so that row-major data with `ld` starts on a `bytes` boundary (a 64-byte
// line, or a vector; numpy gives 16): -1 when its rows do not all share one alignment.
template <typename T>
index_t columns_to_boundary(const T* data, index_t ld, index_t bytes) {
  const index_t offset = index_t(reinterpret_cast<std::uintptr_t>(data) % std::uintptr_t(bytes));
  if ((ld * index_t(sizeof(T))) % bytes != 0 || offset % index_t(sizeof(T)) != 0) return -1;
  return (bytes - offset) % bytes / index_t(sizeof(T));
}

inline size_t whole_lines(size_t elements, size_t element_size) {
  const size_t per_line = kAlign / element_size;
  return (elements + per_line - 1) / per_line * per_line;
}

template <typename T>
Plan<T> make_plan(const KernelFamily<T>& kernels, index_t m, index_t n, index_t k,
                  const Operand<T>& a, const Operand<T>& b, const T* c, index_t ldc,
                  const Epilogue<T>& ep, int num_threads) {
  const Tuning& tune = tuning();
  Plan<T> plan;
  plan.kernels = &kernels;
  plan.m = m;
  plan.n = n;
  plan.k = k;
  const bool wide = m <= kernels.wide_mr;
  plan.mr = wide ? kernels.wide_mr : kernels.mr;
  plan.nr = wide ? kernels.wide_nr[m] : kernels.nr;
  plan.m_tiles = ceil_div(m, plan.mr);
  plan.n_panels = ceil_div(n, plan.nr);
  // kc depends on k alone: near-equal blocks of at most kc_max (float64: 3/4 of it, 192, so
  // that the 14 x kc A micro-panel, 21 KiB, and the B micro-panel streaming past it fit in
  // L1 together).
  plan.kc = k_block(k, sizeof(T));

  // B is read in place when each of its elements is used by one row tile, or when its rows
  // are at most 1 KiB apart (a panel then spans few pages and stays in L2 between row tiles)
  // and there are not very many row tiles; otherwise packed (the thresholds are measured:
  // README.md).
  const index_t b_row_bytes = b.ld * index_t(sizeof(T));
  plan.pack_b = b.transposed || (plan.m_tiles > 1 && (b_row_bytes > 1024 || plan.m_tiles > 64));
  if (tune.pack_b >= 0) plan.pack_b = b.transposed || tune.pack_b != 0;
  // A micro-panels are packed when reused over several panels and either read transposed,
  // or many, or with rows a multiple of 1 KiB apart (the rows of a tile read in place would
  // share L1 sets); below ~100 rows reading in place saves the transposing copy.
  const index_t a_row_bytes = a.ld * index_t(sizeof(T));
  plan.pack_a = plan.n_panels > 1 && m > 1 &&
                (a.transposed || plan.m_tiles >= 8 || a_row_bytes % 1024 == 0);
  if (tune.pack_a >= 0) plan.pack_a = tune.pack_a != 0;
  // Scaling and sums happen while packing.
  if (a.scale.kind != Scale::none) plan.pack_a = true;
  if (b.scale.kind != Scale::none || ep.b_sums != nullptr) plan.pack_b = true;

  // Threads are woken only for work of at least `grain` ns each. Time estimate: the larger
  // of the multiply-adds (~150 GFLOP/s per core) and the stream of B (~80 GB/s per core from
  // L2): batch-1 products are bandwidth-bound and still gain from a second core.
  const double flops_ns = 2.0 * double(m) * double(n) * double(k) / 150.0;
  const double stream_ns = double(k) * double(n) * double(sizeof(T)) / 80.0;
  const int threads = threads_for_work(num_threads, std::max(flops_ns, stream_ns), tune.grain);
  // Row tiles in a multiple of the thread count when they stay at least half of mr tall
  // (128 rows on two threads: 10 tiles of 12-13 rows, not 9 split 5:4; 32 rows: 4 tiles of 8,
  // not 3 split 2:1). Tile heights change no bit (see microkernels.hpp).
  if (threads > 1 && plan.m_tiles % threads != 0 && tune.even_tiles != 0) {
    const index_t even = round_up(plan.m_tiles, threads);
    if (2 * m >= plan.mr * even) plan.m_tiles = even;
  }

  // A narrow first panel ("lead") makes the vector loads of B read in place whole 64-byte
  // lines: numpy arrays are 16-byte aligned (large ones 32 bytes off a line), and split loads
  // are slower. It adds a panel, which may unbalance the threads: it is taken when the best
  // task grid with it is within 5% of the best without. With B packed, no lead aligns the
  // stores of C (`align=2` forces one): C is stored once per tile and k block, while the
  // lead's narrow panel would run a whole k loop at half width per tile.
  //
  // Short products (m <= wide_mr: one row tile) read each element of B once, in place: edge
  // panels are not packed (a copy to read once) nor narrow (a panel costs kc chained
  // multiply-adds, however narrow): the tiles mask their first and last vectors instead, and
  // the first panel is nr - head columns, so that every vector of B between lies on whole
  // lines.
  plan.edges = wide && !plan.pack_b;
  index_t tasks_m = 1, tasks_n = 1;
  if (plan.edges) {
    const index_t vector_bytes = kernels.lanes * index_t(sizeof(T));
    const index_t skip = tune.align != 0 ? columns_to_boundary(b.data, b.ld, vector_bytes) : 0;
    plan.head = skip > 0 ? static_cast<int>(kernels.lanes - skip) : 0;
    if (plan.head > 0 && plan.nr - plan.head < n) plan.lead = plan.nr - plan.head;
    choose_tasks(plan, plan.lead, threads, &tasks_m, &tasks_n);
  } else {
    const bool align_b = !plan.pack_b && tune.align != 2;
    index_t lead = align_b              ? columns_to_boundary(b.data, b.ld, 64)
                   : tune.align == 2    ? columns_to_boundary(c, ldc, 64)
                                        : 0;
    if (tune.align == 0 || lead <= 0 || lead >= plan.nr || lead >= n) lead = 0;
    const index_t plain_cost = choose_tasks(plan, 0, threads, &tasks_m, &tasks_n);
    if (lead > 0) {
      index_t lead_m = 1, lead_n = 1;
      const index_t lead_cost = choose_tasks(plan, lead, threads, &lead_m, &lead_n);
      if (lead_cost * 20 <= plain_cost * 21) {
        plan.lead = lead;
        tasks_m = lead_m;
        tasks_n = lead_n;
      }
    }
  }
  plan.n_panels = panel_count(plan.n, plan.nr, plan.lead);
  // A B packed beforehand is read in place of packing it when it was packed for this product
  // (kernels, k block, panels) and that pays: a few row tiles against a weight of up to
  // 16 MiB. Beyond, streaming the packed panels from L3 or memory in the kernel is slower
  // than a bandwidth-bound pack phase followed by panels in L2.
  constexpr index_t kPackedMaxTiles = 24;
  constexpr double kPackedMaxBytes = 16 << 20;
  const PackedB<T>* packed = b.packed;
  if (packed != nullptr && plan.pack_b && !b.transposed && b.scale.kind == Scale::none &&
      ep.b_sums == nullptr && plan.lead == 0 && !plan.edges && packed->isa == kernels.isa &&
      packed->nr == plan.nr && packed->kc == plan.kc && packed->k == k && packed->n == n &&
      plan.m_tiles <= kPackedMaxTiles && double(k) * double(n) * sizeof(T) <= kPackedMaxBytes)
    plan.packed_b = packed;
  plan.tasks_m = tasks_m;
  plan.tasks_n = tasks_n;
  plan.tiles_per_task = ceil_div(plan.m_tiles, plan.tasks_m);
  plan.panels_per_task = ceil_div(plan.n_panels, plan.tasks_n);
  const index_t tasks = plan.tasks_m * plan.tasks_n;
  plan.threads = static_cast<int>(std::max<index_t>(1, std::min<index_t>(threads, tasks)));

  plan.tile_act = tile_activation(ep.activation.kind);
  if (plan.tile_act == TileActivation::none) {
    plan.tile_act = TileActivation::linear;
    plan.slow_act = true;
    const vecmath::VectorMath<T>& math = vecmath::vector_math<T>(kernels.isa);
    if (has_vector_math(ep.activation.kind)) plan.apply = math.apply;
  }
  const size_t kc = size_t(plan.kc);
  const size_t a_panels = a.transposed ? kTileGroup : 1;
  plan.a_buffer =
      plan.pack_a ? whole_lines(a_panels * round_up(plan.mr, kernels.lanes) * kc, sizeof(T)) : 0;
  plan.b_buffer = plan.pack_b && plan.packed_b == nullptr
                      ? whole_lines(plan.panels_per_task * plan.nr * kc, sizeof(T))
                      : 0;
  plan.edge_buffer = plan.pack_b || plan.edges ? 0 : 2 * whole_lines(plan.nr * kc, sizeof(T));
  return plan;
}

// One task: rows tiles [tile_begin, tile_end) x panels [panel_begin, panel_end) of C over
// all of k. `a_buffer`, `b_buffer`, `edge_buffer` belong to the thread running it.
template <typename T>
void run_task(const Plan<T>& plan, const Operand<T>& a, const Operand<T>& b, T* c,
              index_t ldc, const Epilogue<T>& ep, index_t task, T* a_buffer, T* b_buffer,
              T* edge_buffer) {
  const KernelFamily<T>& kernels = *plan.kernels;
  const int lanes = kernels.lanes;
  const index_t row_block = task / plan.tasks_n;
  const index_t column_block = task % plan.tasks_n;
  const index_t tile_begin = plan.m_tiles * row_block / plan.tasks_m;
  const index_t tile_end = plan.m_tiles * (row_block + 1) / plan.tasks_m;
  const index_t panel_begin = plan.n_panels * column_block / plan.tasks_n;
  const index_t panel_end = plan.n_panels * (column_block + 1) / plan.tasks_n;
  const index_t j_end = panel_start(plan, panel_end);
  const T alpha = static_cast<T>(ep.activation.alpha);
  // Panels narrower than a vector multiple: the lead panel, the last panel of C.
  const bool lead_in_task = !plan.edges && plan.lead > 0 && panel_begin == 0;
  const index_t last_j0 = panel_start(plan, panel_end - 1);
  const bool last_partial = !plan.edges && (j_end - last_j0) % lanes != 0;
  T* const lead_edge = edge_buffer;
  T* const last_edge = edge_buffer + plan.edge_buffer / 2;

  TileArgs<T> args;
  args.ldc = ldc;
  args.ld_preact = ep.ld_preact;
  args.act = plan.tile_act;
  args.alpha = alpha;

  for (index_t pc = 0; pc < plan.k; pc += plan.kc) {
    const index_t kc = std::min(plan.kc, plan.k - pc);
    const bool last = pc + kc >= plan.k;
    args.kc = kc;
    args.load_c = ep.accumulate || pc > 0;
    args.last = last;

    // B panels of this task: packed (zero-padded to whole vectors; panel p of the task at
    // b_buffer + (p - panel_begin) kc nr), or read in place except panels narrower than a
    // vector multiple, which are packed.
    // A B packed beforehand (see PackedB::offset) is read where it lies.
    const PackedB<T>* prepacked = plan.packed_b;
    if (prepacked != nullptr) {
      // nothing to pack
    } else if (plan.pack_b && !b.transposed) {
      // With b_sums, the row blocks of a column block (which all pack its panels) each sum
      // a near-equal share of them: every column is summed by one task, over k in order,
      // and no thread carries the whole sum.
      index_t sum_begin = panel_begin, sum_end = panel_begin;
      if (ep.b_sums != nullptr) {
        const index_t panels = panel_end - panel_begin;
        sum_begin = panel_begin + panels * row_block / plan.tasks_m;
        sum_end = panel_begin + panels * (row_block + 1) / plan.tasks_m;
      }
      // Panels [first, last) of the task (first past the lead), summed or not.
      auto pack_range = [&](index_t first, index_t last, bool sums) {
        if (last <= first) return;
        const index_t j0 = panel_start(plan, first);
        const index_t offset = pc * b.ld + j0;
        kernels.pack_panels(b.data + offset, b.ld, kc, panel_start(plan, last) - j0, plan.nr,
                            b_buffer + (first - panel_begin) * kc * plan.nr,
                            pack_scale(b.scale, offset), sums ? ep.b_sums + j0 : nullptr);
      };
      index_t first = panel_begin;
      if (lead_in_task) {
        const index_t offset = pc * b.ld;
        const bool sums = sum_begin == 0 && sum_end > 0;
        kernels.pack_panels(b.data + offset, b.ld, kc, plan.lead,
                            static_cast<int>(round_up(plan.lead, lanes)), b_buffer,
                            pack_scale(b.scale, offset), sums ? ep.b_sums : nullptr);
        first = 1;
      }
      const index_t summed_begin = std::max(first, sum_begin);
      const index_t summed_end = std::max(summed_begin, sum_end);
      pack_range(first, summed_begin, false);
      pack_range(summed_begin, summed_end, true);
      pack_range(summed_end, panel_end, false);
    } else if (plan.pack_b) {
      T* out = b_buffer;
      for (index_t p = panel_begin; p < panel_end; ++p, out += kc * plan.nr) {
        const index_t j0 = panel_start(plan, p);
        const int cols = static_cast<int>(panel_start(plan, p + 1) - j0);
        const index_t offset = j0 * b.ld + pc;
        const int width = static_cast<int>(round_up(cols, lanes));
        kernels.pack_transposed(b.data + offset, b.ld, kc, cols, width, out, width,
                                pack_scale(b.scale, offset));
      }
    } else {
      if (lead_in_task)
        kernels.pack_panels(b.data + pc * b.ld, b.ld, kc, plan.lead,
                            static_cast<int>(round_up(plan.lead, lanes)), lead_edge,
                            PackScale<T>{}, nullptr);
      if (last_partial && !(lead_in_task && panel_end - panel_begin == 1))
        kernels.pack_panels(b.data + pc * b.ld + last_j0, b.ld, kc, j_end - last_j0,
                            plan.nr, last_edge, PackScale<T>{}, nullptr);
    }

    for (index_t tile = tile_begin; tile < tile_end; ++tile) {
      index_t i0;
      int rows;
      tile_rows(plan, tile, &i0, &rows);
      args.rows = rows;
      if (plan.pack_a && a.transposed) {
        // Row tiles of a transposed A are packed kTileGroup at a time: the rows of its source
        // are then read in runs of ~100 elements, not 12.
        const int width = static_cast<int>(round_up(plan.mr, lanes));
        const index_t group_index = (tile - tile_begin) % kTileGroup;
        if (group_index == 0) {
          int heights[kTileGroup];
          const int count = static_cast<int>(std::min<index_t>(kTileGroup, tile_end - tile));
          for (int t = 0; t < count; ++t) {
            index_t unused;
            tile_rows(plan, tile + t, &unused, &heights[t]);
          }
          const index_t offset = pc * a.ld + i0;
          kernels.pack_row_tiles(a.data + offset, a.ld, kc, heights, count, width, a_buffer,
                                 pack_scale(a.scale, offset));
        }
        args.a = a_buffer + group_index * kc * width;
        args.a_stride = width;
        args.a_rows = false;
      } else if (plan.pack_a) {
        const index_t offset = i0 * a.ld + pc;
        kernels.pack_transposed(a.data + offset, a.ld, kc, rows, rows, a_buffer, rows,
                                pack_scale(a.scale, offset));
        args.a = a_buffer;
        args.a_stride = rows;
        args.a_rows = false;
      } else if (a.transposed) {
        args.a = a.data + pc * a.ld + i0;
        args.a_stride = a.ld;
        args.a_rows = false;
      } else {
        args.a = a.data + i0 * a.ld + pc;
        args.a_stride = a.ld;
        args.a_rows = true;
      }
      for (index_t p = panel_begin; p < panel_end; ++p) {
        const index_t j0 = panel_start(plan, p);
        const int cols = static_cast<int>(panel_start(plan, p + 1) - j0);
        args.cols = cols;
        args.head = plan.edges && p == 0 ? plan.head : 0;
        // masks only where needed: a masked load is slower than a plain one
        args.edges = plan.edges && (args.head > 0 || cols % lanes != 0);
        const index_t shift = args.head;  // B, C, bias and preact at column j0 - head
        if (prepacked != nullptr) {
          args.b = prepacked->data.data() + prepacked->offset(pc, p, kc);
          args.ldb = round_up(cols, lanes);
        } else if (plan.pack_b) {
          args.b = b_buffer + (p - panel_begin) * kc * plan.nr;
          args.ldb = round_up(cols, lanes);
        } else if (lead_in_task && p == 0) {
          args.b = lead_edge;
          args.ldb = round_up(cols, lanes);
        } else if (last_partial && p == panel_end - 1) {
          args.b = last_edge;
          args.ldb = round_up(cols, lanes);
        } else {
          args.b = b.data + pc * b.ld + j0 - shift;
          args.ldb = b.ld;
        }
        args.c = c + i0 * ldc + j0 - shift;
        args.bias = (last && ep.bias != nullptr) ? ep.bias + j0 - shift : nullptr;
        args.preact = (last && ep.preact != nullptr)
                          ? ep.preact + i0 * ep.ld_preact + j0 - shift : nullptr;
        kernels.tile(args);
        if (last && plan.slow_act) {
          for (int i = 0; i < rows; ++i) {
            T* row = c + (i0 + i) * ldc + j0;
            if (plan.apply != nullptr)
              plan.apply(row, row, cols, ep.activation.kind, alpha);
            else
              for (int j = 0; j < cols; ++j)
                row[j] = scalar::forward(ep.activation.kind, alpha, row[j]);
          }
        }
      }
    }
  }
}

}  // namespace

template <typename T>
PackedB<T> pack_b_for(const KernelFamily<T>& kernels, const T* b, index_t ld, index_t k,
                      index_t n, int num_threads) {
  PackedB<T> packed;
  packed.k = k;
  packed.n = n;
  packed.kc = k_block(k, sizeof(T));
  packed.nr = kernels.nr;
  packed.isa = kernels.isa;
  const index_t panels = ceil_div(n, index_t(kernels.nr));
  packed.data.assign(size_t(packed.offset(k, 0, 0)), T(0));  // the end of the last block
  const index_t blocks = ceil_div(k, packed.kc);
  // One task per k block and group of 8 panels (each reads its source rows once).
  constexpr index_t kPanelGroup = 8;
  const index_t groups = ceil_div(panels, kPanelGroup);
  const int threads = threads_for_work(num_threads, double(k) * double(n), 1 << 18);
  parallel_for(blocks * groups, threads, [&](index_t task) {
    const index_t block = task / groups;
    const index_t p0 = (task % groups) * kPanelGroup;
    const index_t pc = block * packed.kc;
    const index_t kc = std::min(packed.kc, k - pc);
    const index_t j0 = p0 * kernels.nr;
    const index_t cols = std::min(n, j0 + kPanelGroup * kernels.nr) - j0;
    kernels.pack_panels(b + pc * ld + j0, ld, kc, cols, kernels.nr,
                        packed.data.data() + packed.offset(pc, p0, kc),
                        PackScale<T>{}, nullptr);
  });
  return packed;
}

template <typename T>
void blocked_gemm(const KernelFamily<T>& kernels, index_t m, index_t n, index_t k,
                  const Operand<T>& a, const Operand<T>& b, T* c, index_t ldc,
                  const Epilogue<T>& ep, int num_threads) {
  const Plan<T> plan = make_plan(kernels, m, n, k, a, b, c, ldc, ep, std::max(num_threads, 1));
  const size_t per_thread = plan.a_buffer + plan.b_buffer + plan.edge_buffer;
  T* scratch = static_cast<T*>(t_scratch.get(sizeof(T) * per_thread * size_t(plan.threads)));
  // Tasks are claimed from shared cursors (see parallel_tasks): the budget may grant fewer
  // threads than planned, a thread may start late, and any team computes the same bits.
  parallel_tasks(plan.tasks_m * plan.tasks_n, plan.threads, [&](int thread, index_t task) {
    T* a_buffer = scratch + size_t(thread) * per_thread;
    T* b_buffer = a_buffer + plan.a_buffer;
    T* edge_buffer = b_buffer + plan.b_buffer;
    run_task(plan, a, b, c, ldc, ep, task, a_buffer, b_buffer, edge_buffer);
  });
  t_scratch.trim();
}


#define DENSEKIT_INSTANTIATE(T)                                                              \
  template PackedB<T> pack_b_for<T>(const KernelFamily<T>&, const T*, index_t, index_t,      \
                                    index_t, int);                                           \
  template void blocked_gemm<T>(const KernelFamily<T>&, index_t, index_t, index_t,           \
                                const Operand<T>&, const Operand<T>&, T*, index_t,           \
                                const Epilogue<T>&, int);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit::gemm
