// Process-wide thread default, read from the environment once, and fork handling.
#include "parallel.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace densekit {
namespace {

int affinity_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
#endif
  // Elsewhere (macOS, whose Apple clang builds have no OpenMP): the CPUs the OS reports.
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// The leading integer of environment variable `name`, capped at `most`; `fallback` when it is
// unset, not a number or below `least`. (OMP_NUM_THREADS may be a list, "4,2": its first
// entry is the outer level.)
int env_int(const char* name, long least, long most, int fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr) return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || value < least) return fallback;
  return static_cast<int>(std::min(value, most));
}

int env_num_threads() { return env_int("OMP_NUM_THREADS", 1, 1 << 16, 0); }

int initial_threads() {
  const int from_env = env_num_threads();
  return from_env > 0 ? from_env : affinity_cpus();
}

std::atomic<int> g_default_threads{0};
std::atomic<bool> g_default_explicit{false};
std::atomic<bool> g_forked_child{false};
std::atomic<int> g_budgeted_regions{0};
// steady_clock nanoseconds until which a Python thread counts as busy.
std::atomic<long long> g_python_busy_until{0};
// A reacquire slower than this had to wait for another thread (an uncontended one takes
// well under a microsecond; the interpreter hands the GIL over every 5 ms by default).
constexpr double kGilWaitSeconds = 50e-6;
// How long one observed wait keeps a core for Python: long enough to span the gaps between
// the GIL hand-overs of a busy thread, short enough to give the core back soon after.
constexpr long long kPythonBusyNanoseconds = 100'000'000;

long long now_nanoseconds() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
// Whether the call running on this OS thread takes the shared budget (set per call).
thread_local bool t_call_budgeted = false;

#if defined(_OPENMP)
// omp_get_max_threads() as the process started; a different value on some thread means
// someone (threadpoolctl's threadpool_limits) called omp_set_num_threads there.
const int g_initial_omp_max_threads = omp_get_max_threads();
#endif


// -- the pool -------------------------------------------------------------------------------

Threading read_threading() {
  const char* text = std::getenv("DENSEKIT_THREADING");
  if (text != nullptr && std::strcmp(text, "openmp") == 0) return Threading::openmp;
  return Threading::pool;
}

// Long enough to span the Python between two kernel calls of a training loop (a few to a
// few tens of microseconds), short enough to give the core back soon after the last call.
constexpr int kDefaultSpinMicroseconds = 200;
// Idle workers spin only while the jobs' gaps average less than this (see Pool::work).
constexpr long long kSpinGapNanoseconds = 50'000;


inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Lets another runnable thread on this core run (another library's pool, a Python thread)
// while a worker or a caller waits; returns at once when there is none.
inline void yield_core() {
#if defined(__linux__)
  sched_yield();
#else
  std::this_thread::yield();
#endif
}

// Workers wait for jobs; a job is one region: its body, the number of workers it still wants
// and those running it. The caller publishes its job, runs body(0), withdraws the job so that
// no further worker joins, and waits for the workers that joined. The pool is never
// destroyed (workers may be blocked in it while the process exits).
class Pool {
  using Clock = std::chrono::steady_clock;

 public:
  // Idle workers spinning for work now (not asleep): a region opened at once finds them.
  bool worker_spinning() const { return spinning_.load(std::memory_order_relaxed) > 0; }

  void run(int participants, const RegionBody& body) {
    Job job{&body, participants - 1};
    // The gap since the last region ended, averaged: workers spin while it is short.
    const long long start = now_nanoseconds();
    const long long gap = std::min(start - last_end_ns_.load(std::memory_order_relaxed), kMaxGap);
    gap_ns_.store((3 * gap_ns_.load(std::memory_order_relaxed) + gap) / 4,
                  std::memory_order_relaxed);
    bool wake = false;
    {
      const auto lock = lock_spinning();
      open_.push_back(&job);
      open_count_.fetch_add(1, std::memory_order_release);
      wanted_ += job.slots;
      const int cap = std::max(64, 4 * hardware_threads());
      while (wanted_ > idle_ && workers_ < cap && start_worker()) {
      }
      wake = sleeping_ > 0;
    }
    // Outside the lock: a woken worker then takes it at once instead of blocking on it.
    if (wake) work_cv_.notify_all();
    body(0);
    {
      const auto lock = lock_spinning();
      if (job.joined < job.slots) withdraw(&job);
    }
    // The workers that joined are running claimed work and finish soon: spin, then sleep.
    const auto deadline = Clock::now() + std::chrono::microseconds(50);
    while (job.running.load(std::memory_order_acquire) != 0) {
      if (Clock::now() > deadline) {
        std::unique_lock<std::mutex> lock(mutex_);
        done_cv_.wait(lock, [&] { return job.running.load(std::memory_order_acquire) == 0; });
        break;
      }
      cpu_relax();
      yield_core();
    }
    last_end_ns_.store(now_nanoseconds(), std::memory_order_relaxed);
  }

 private:
  struct Job {
    const RegionBody* body;
    int slots;     // workers wanted
    int joined = 0;  // workers that took a participant index (under mutex_)
    std::atomic<int> running{0};  // workers inside body (raised under mutex_)
  };

  // The pool's lock, taken spinning for a while first: when many workers join or leave a
  // region at once, a blocking lock would put each loser to sleep in the kernel and wake them
  // one after another (measured on 16 cores: short regions 12% slower than OpenMP's).
  std::unique_lock<std::mutex> lock_spinning() {
    for (int turn = 0; turn < 2000; ++turn) {
      if (mutex_.try_lock()) return std::unique_lock<std::mutex>(mutex_, std::adopt_lock);
      cpu_relax();
    }
    return std::unique_lock<std::mutex>(mutex_);
  }

  void withdraw(Job* job) {
    open_.erase(std::find(open_.begin(), open_.end(), job));
    open_count_.fetch_sub(1, std::memory_order_relaxed);
    wanted_ -= job->slots - job->joined;
  }

  // False when the OS refuses a thread: the regions then run with the workers there are.
  bool start_worker() {
    try {
      std::thread([this] { work(); }).detach();
    } catch (...) {
      return false;
    }
    ++workers_;
    ++idle_;
    return true;
  }

  void work() {
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "densekit");
#endif
    const auto spin = std::chrono::microseconds(spin_microseconds());
    for (;;) {
      // Spin a while for the next job, yielding the core at every turn to any other runnable
      // thread, but only while jobs come back to back (a training loop's kernel calls). When
      // the gaps are long, another library's calls may be filling them (NumPy's OpenBLAS):
      // its spinning workers would hold the core, a spinning worker here would queue behind
      // them, while a sleeping one is woken with priority. Measured on 2 cores: alternating
      // with NumPy 1.45x the separate times when spinning, 1.05x when sleeping; a small
      // training step 123 us spinning, 184 us sleeping.
      const bool back_to_back = gap_ns_.load(std::memory_order_relaxed) < kSpinGapNanoseconds;
      const auto deadline = Clock::now() + (back_to_back ? spin : Clock::duration::zero());
      Job* job;
      int participant;
      spinning_.fetch_add(1, std::memory_order_relaxed);
      for (;;) {
        for (unsigned turn = 1; open_count_.load(std::memory_order_acquire) == 0; ++turn) {
          cpu_relax();
          if (turn % 8 == 0) {
            if (Clock::now() >= deadline) break;
            yield_core();
          }
        }
        auto lock = lock_spinning();
        // A job seen while spinning may be gone already (its caller did the work): spin on.
        if (open_.empty() && Clock::now() < deadline) continue;
        spinning_.fetch_sub(1, std::memory_order_relaxed);
        while (open_.empty()) {
          ++sleeping_;
          work_cv_.wait(lock);
          --sleeping_;
        }
        job = open_.front();
        participant = ++job->joined;
        job->running.fetch_add(1, std::memory_order_relaxed);
        --wanted_;
        --idle_;
        if (job->joined == job->slots) {
          open_.erase(open_.begin());
          open_count_.fetch_sub(1, std::memory_order_relaxed);
        }
        break;
      }
      (*job->body)(participant);
      const auto lock = lock_spinning();
      ++idle_;
      // The job may be gone as soon as running reaches 0: touch nothing of it after.
      if (job->running.fetch_sub(1, std::memory_order_acq_rel) == 1) done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::vector<Job*> open_;  // jobs that still want workers, oldest first
  std::atomic<int> open_count_{0};
  // Moving average of the gaps between regions (racy updates from concurrent callers are
  // fine: it only decides whether idle workers spin), and when the last region ended. A gap
  // counts at most kMaxGap: after a pause, two quick regions bring the spin back.
  static constexpr long long kMaxGap = 4 * kSpinGapNanoseconds;
  std::atomic<long long> gap_ns_{0}, last_end_ns_{0};
  int wanted_ = 0;    // worker places the open jobs still want
  int workers_ = 0;   // threads started
  int idle_ = 0;      // workers not running a job
  int sleeping_ = 0;  // idle workers blocked on work_cv_
  std::atomic<int> spinning_{0};  // idle workers spinning for the next job
};

Pool& pool() {
  static Pool* const instance = new Pool();  // never destroyed, see Pool
  return *instance;
}

#if defined(__linux__)
void after_fork_in_child() { g_forked_child.store(true); }
const bool g_atfork_registered = [] {
  pthread_atfork(nullptr, nullptr, after_fork_in_child);
  return true;
}();
#endif

}  // namespace

int hardware_threads() {
  static const int cached = [] {
    const int from_env = env_num_threads();
    const int cpus = affinity_cpus();
    return from_env > 0 ? std::min(from_env, cpus) : cpus;
  }();
  return cached;
}

int default_num_threads() {
  int value = g_default_threads.load(std::memory_order_relaxed);
  if (value <= 0) {
    value = initial_threads();
    g_default_threads.store(value, std::memory_order_relaxed);
  }
  return value;
}

void set_default_num_threads(int n) {
  if (n < 1) throw ArgumentError("num_threads must be >= 1, got " + std::to_string(n));
  g_default_threads.store(n, std::memory_order_relaxed);
  g_default_explicit.store(true, std::memory_order_relaxed);
}

void reset_default_num_threads() {
  g_default_threads.store(initial_threads(), std::memory_order_relaxed);
  g_default_explicit.store(false, std::memory_order_relaxed);
}

bool default_is_explicit() { return g_default_explicit.load(std::memory_order_relaxed); }

bool openmp_enabled() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

int resolve_num_threads(int requested) {
  t_call_budgeted = false;
  if (g_forked_child.load(std::memory_order_relaxed)) return 1;
  // More threads than 4 per CPU only add switching, and thousands could exhaust the process's
  // thread limit (libgomp aborts when it cannot create one): cap every count there.
  const int cap = std::max(64, 4 * hardware_threads());
  if (requested > 0) return std::min(requested, cap);
  int threads = std::min(default_num_threads(), cap);
#if defined(_OPENMP)
  const int omp_limit = omp_get_max_threads();
  if (omp_limit != g_initial_omp_max_threads) threads = std::min(threads, std::max(omp_limit, 1));
#endif
  t_call_budgeted = !default_is_explicit();
  return threads;
}

void forget_python_thread_busy() { g_python_busy_until.store(0, std::memory_order_relaxed); }

void note_gil_reacquire_wait(double seconds) {
  if (seconds > kGilWaitSeconds)
    g_python_busy_until.store(now_nanoseconds() + kPythonBusyNanoseconds,
                              std::memory_order_relaxed);
}

bool python_thread_busy() {
  return now_nanoseconds() < g_python_busy_until.load(std::memory_order_relaxed);
}

RegionThreads::RegionThreads(int wanted) : granted_(std::max(wanted, 1)) {
  if (!t_call_budgeted || granted_ == 1) return;
  counted_ = true;
  const int running = g_budgeted_regions.fetch_add(1, std::memory_order_acq_rel) + 1;
  const int cores = std::max(1, hardware_threads() - (python_thread_busy() ? 1 : 0));
  const int share = std::max(1, cores / running);
  granted_ = std::min(granted_, share);
}

RegionThreads::~RegionThreads() {
  if (counted_) g_budgeted_regions.fetch_sub(1, std::memory_order_acq_rel);
}

Threading threading() {
  static const Threading value = read_threading();
  return value;
}

int spin_microseconds() {
  static const int value = env_int("DENSEKIT_SPIN_US", 0, 1'000'000, kDefaultSpinMicroseconds);
  return value;
}

bool pool_workers_asleep() {
  if (g_forked_child.load(std::memory_order_relaxed)) return false;
#if defined(_OPENMP)
  if (threading() == Threading::openmp) return false;
#endif
  return !pool().worker_spinning();
}

void run_region(int participants, const RegionBody& body) noexcept {
  // A forked child has none of the parent's threads (nor a usable pool): run alone.
  if (participants <= 1 || g_forked_child.load(std::memory_order_relaxed)) {
    body(0);
    return;
  }
#if defined(_OPENMP)
  if (threading() == Threading::openmp) {
#pragma omp parallel num_threads(participants)
    body(omp_get_thread_num());
    return;
  }
#endif
  pool().run(participants, body);
}

}  // namespace densekit
