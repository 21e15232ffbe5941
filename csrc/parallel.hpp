// Thread counts and the two parallel patterns every kernel uses.
//
// The thread count is always an argument; the process-wide default lives here and is read
// by the bindings, never by OpenMP's per-thread ICVs, so a setting made in one Python thread
// holds in every thread. Work is split into tasks whose outputs are disjoint and whose
// internal order never depends on the thread count, so results are bitwise identical for
// any number of threads. Reductions go through fixed chunks summed in a fixed order.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include "common.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace densekit {

// Threads this process may use: CPU affinity, capped by OMP_NUM_THREADS when set.
int hardware_threads();
// The process-wide default used when a kernel gets num_threads <= 0.
int default_num_threads();
void set_default_num_threads(int n);
// Back to the automatic default (OMP_NUM_THREADS or the affinity), which is budgeted.
void reset_default_num_threads();
// True when OpenMP is compiled in.
bool openmp_enabled();
// The thread count of one kernel call, resolved on the calling thread before the GIL is
// released. requested > 0 is an explicit per-call count and is honoured as given. Otherwise
// the call takes the process default, lowered by threadpoolctl's limit when one was applied
// to this thread, and is marked "budgeted" for the parallel regions it runs on this thread.
// After fork() the child runs single-threaded (libgomp's pool does not survive fork).
int resolve_num_threads(int requested);
// True when set_num_threads() has been called (an explicit default is not budgeted).
bool default_is_explicit();

// Python threads that run Python code need a core too. The bindings report how long each
// kernel call waited to take the GIL back; a wait means another Python thread held it, i.e.
// was running Python beside the kernels. For a short while after such a wait, budgeted
// regions leave one core to Python (max(1, cores - 1)).
void note_gil_reacquire_wait(double seconds);
bool python_thread_busy();
void forget_python_thread_busy();

// A share of the process's cores for one parallel region. Regions of budgeted calls (see
// resolve_num_threads) that overlap in time split the cores between them, so several Python
// threads calling kernels at once do not oversubscribe the machine: each region gets
// max(1, min(wanted, cores / regions running)), one core fewer while a Python thread is
// busy (see note_gil_reacquire_wait). Explicit counts are granted as asked.
// The grant only changes how many threads work, never the results.
class RegionThreads {
 public:
  explicit RegionThreads(int wanted);
  ~RegionThreads();
  RegionThreads(const RegionThreads&) = delete;
  RegionThreads& operator=(const RegionThreads&) = delete;
  int count() const { return granted_; }

 private:
  int granted_ = 1;
  bool counted_ = false;
};
// Do not wake more threads than there are tasks of about `grain` units of work.
inline int threads_for_work(int num_threads, double work, double grain) {
  const double useful = work / grain;
  if (useful < 2.0) return 1;
  return static_cast<int>(std::min<double>(num_threads, useful));
}

// How parallel regions run. The default is densekit's own pool: a region's caller works
// too, and when it runs out of work it waits only for the workers that joined, never for one
// the OS has not scheduled yet (beside another busy thread pool, such as NumPy's OpenBLAS
// spinning on the other core, an OpenMP region's closing barrier waits a whole time slice for
// that worker). Idle workers spin for a short while, yielding the core to any other runnable
// thread, then sleep. DENSEKIT_THREADING=openmp runs regions as OpenMP parallel regions
// instead (same results: work is claimed from shared cursors, see parallel_tasks).
enum class Threading { pool, openmp };
Threading threading();
// Microseconds an idle pool worker spins (yielding) before it sleeps: DENSEKIT_SPIN_US, else
// a default that spans the gaps of a Python training loop between two kernel calls.
int spin_microseconds();
// True when densekit's pool runs the regions and none of its idle workers is spinning for
// work at this moment, so that a region opened now waits for a sleeping thread to wake
// (~10-30 us on a VM: more than two small products gain by running side by side). False
// under OpenMP threading (its threads' state is not known here) and in a forked child (no
// regions). A hint for cost decisions only: it never changes results.
bool pool_workers_asleep();

// A non-owning reference to a callable taking the participant index.
class RegionBody {
 public:
  template <class F>
  explicit RegionBody(F& f) : object_(&f), call_([](void* o, int p) { (*static_cast<F*>(o))(p); }) {}
  void operator()(int participant) const { call_(object_, participant); }

 private:
  void* object_;
  void (*call_)(void*, int);
};
// Runs body(p) on the calling thread (p = 0) and on up to participants - 1 other threads
// (p = 1, 2, ...; each index once at most). Returns when every started body(p) returned.
// Bodies that never start are skipped, so each body must claim its work from shared state
// and the work must be done by whoever is present (parallel_tasks does both).
// body must not throw.
void run_region(int participants, const RegionBody& body) noexcept;

// Runs task(participant, i) for every i in [0, n_tasks) on up to num_threads threads.
// Participant p starts with the p-th contiguous share of the tasks (so consecutive calls
// give a thread the same data, still in its cache) and then takes tasks left in the other
// shares, so a thread that starts late or never costs no waiting. The tasks' outputs must
// not depend on which thread runs them. participant < the region's thread count, e.g. for
// per-thread scratch. An exception thrown by a task is rethrown on the caller's thread
// after the region (the other tasks still run).
template <class Task>
void parallel_tasks(index_t n_tasks, int num_threads, Task&& task) {
  if (n_tasks <= 0) return;
  const RegionThreads region(
      static_cast<int>(std::min<index_t>(std::max(num_threads, 1), n_tasks)));
  const int threads = region.count();
  if (threads == 1) {
    for (index_t i = 0; i < n_tasks; ++i) task(0, i);
    return;
  }
  struct alignas(64) Share {
    std::atomic<index_t> next{0};
    index_t end = 0;
  };
  // On the stack up to kLocalShares threads (no allocation per region), else on the heap.
  constexpr int kLocalShares = 16;
  Share local[kLocalShares];
  std::unique_ptr<Share[]> heap;
  Share* shares = local;
  if (threads > kLocalShares) shares = (heap = std::make_unique<Share[]>(size_t(threads))).get();
  for (int p = 0; p < threads; ++p) {
    shares[p].next.store(n_tasks * p / threads, std::memory_order_relaxed);
    shares[p].end = n_tasks * (p + 1) / threads;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  auto body = [&](int participant) {
    for (int r = 0; r < threads; ++r) {
      Share& share = shares[(participant + r) % threads];
      for (index_t i = share.next.fetch_add(1, std::memory_order_relaxed); i < share.end;
           i = share.next.fetch_add(1, std::memory_order_relaxed)) {
        try {
          task(participant, i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (!error) error = std::current_exception();
        }
      }
    }
  };
  run_region(threads, RegionBody(body));
  if (error) std::rethrow_exception(error);
}

// Runs task(i) for i in [0, n_tasks) on up to num_threads threads (see parallel_tasks).
template <class Task>
void parallel_for(index_t n_tasks, int num_threads, Task&& task) {
  parallel_tasks(n_tasks, num_threads, [&](int, index_t i) { task(i); });
}

// Sum of partial(begin, end) over [0, n) cut into chunks of `chunk` items. The chunking is
// fixed and the partials are added in order, so the result does not depend on threads.
template <class Partial>
double chunked_sum(index_t n, index_t chunk, int num_threads, Partial&& partial) {
  if (n <= 0) return 0.0;
  const index_t n_chunks = (n + chunk - 1) / chunk;
  if (n_chunks == 1) return partial(index_t{0}, n);
  std::vector<double> partials(static_cast<size_t>(n_chunks));
  parallel_for(n_chunks, num_threads, [&](index_t c) {
    const index_t begin = c * chunk;
    partials[static_cast<size_t>(c)] = partial(begin, std::min(n, begin + chunk));
  });
  double total = 0.0;
  for (double p : partials) total += p;
  return total;
}

}  // namespace densekit
