#!/usr/bin/env bash
# The extension under sanitizers. By default AddressSanitizer + UndefinedBehaviorSanitizer:
# builds densekit._core with -DDENSEKIT_SANITIZE=address,undefined into build/sanitize, then
# runs the kernel and binding tests and a bounded binding-fuzzer run against it (what CI runs,
# .ci/run). With --thread, ThreadSanitizer over densekit's thread pool (tools/tsan.sh). Any
# sanitizer report ends the process with an error, so a finding fails the run.
#
#   tools/sanitize.sh                              # build, kernel tests, 4000 fuzzer calls
#   DENSEKIT_FUZZ_EXAMPLES=20000 tools/sanitize.sh # a longer fuzzer run
#   tools/sanitize.sh tests/test_dense.py -k relu  # other pytest arguments instead of the subset
#   tools/sanitize.sh --thread                     # TSan over the concurrent tests
#
# Needs g++ (or clang) with its sanitizer runtimes, cmake, and pybind11, numpy, pytest,
# hypothesis and torch in the active Python (pip install ".[test]" pybind11).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=address
if [[ "${1:-}" == --thread ]]; then
  mode=thread
  shift
fi
python="$(command -v python)"

# -- build, into its own directory: -O1 (UBSan makes -O2 compile twice as long) ---------------
if [[ $mode == address ]]; then
  build="${DENSEKIT_SANITIZE_BUILD:-build/sanitize}"
  configure=(-DDENSEKIT_SANITIZE=address,undefined)
else
  # Without OpenMP: libgomp is not instrumented, and its barriers would be reported as races.
  # Every parallel region then runs on densekit's own pool, the subject of this run.
  build="${DENSEKIT_SANITIZE_BUILD:-build/tsan}"
  configure=(-DDENSEKIT_SANITIZE=thread -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON)
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)"
cmake -S . -B "$build/cmake" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 "${configure[@]}" \
  -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$python" \
  -DSKBUILD_PROJECT_VERSION="$version" >/dev/null
cmake --build "$build/cmake" -j "${DENSEKIT_BUILD_JOBS:-2}"

# A copy of the package with the sanitized extension, first on PYTHONPATH: it shadows any
# installed densekit (and python/densekit's own extension) for every Python started below,
# the tests' child processes included.
rm -rf "$build/pkg"
mkdir -p "$build/pkg"
cp -r python/densekit "$build/pkg/"
rm -f "$build"/pkg/densekit/_core*.so
cp "$build"/cmake/_core*.so "$build/pkg/densekit/"

# -- the environment -------------------------------------------------------------------------
# Python itself is not instrumented: the sanitizer's runtime must be loaded before anything.
compiler="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/cmake/CMakeCache.txt")"
runtime_name=libasan.so
[[ $mode == thread ]] && runtime_name=libtsan.so
runtime="$("$compiler" -print-file-name="$runtime_name")"
[[ -f "$runtime" ]] || { echo "sanitize.sh: no $runtime for $compiler" >&2; exit 1; }
# The C++ runtime too, so that ASan finds the __cxa_throw it wraps (Python does not link it;
# without it the first C++ exception ends the process with "CHECK failed ... real___cxa_throw").
cxx_runtime="$(readlink -f "$("$compiler" -print-file-name=libstdc++.so)")"
# Sanitized code runs several times slower: the hypothesis tests draw fewer examples
# (tests/conftest.py's "sanitize" profile), the fixed cases all run.
sanitized=(
  env
  DENSEKIT_HYPOTHESIS_PROFILE=sanitize
  LD_PRELOAD="$runtime $cxx_runtime"
  PYTHONPATH="$PWD/$build/pkg${PYTHONPATH:+:$PYTHONPATH}"
)
# Reports go to files, one per process (<sanitizer>.<pid>): pytest captures what the tests'
# processes write to file descriptor 2, and the tests' child processes have their own.
reports="$PWD/$build/reports"
rm -rf "$reports"
mkdir -p "$reports"
if [[ $mode == address ]]; then
  # detect_leaks=0: CPython frees little at exit, by design. allocator_may_return_null and
  # max_allocation_size_mb: an allocation above 4 GiB fails (MemoryError) instead of taking
  # the machine's memory; the fuzzer's RLIMIT_AS does that without ASan, but ASan's shadow
  # memory needs terabytes of address space (hence --memory-gib 0 below).
  # PYTHONMALLOC=malloc: Python's own objects go through ASan's allocator too.
  sanitized+=(
    ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=4096:log_path=$reports/asan:${ASAN_OPTIONS:-}"
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tools/ubsan.supp:log_path=$reports/ubsan:${UBSAN_OPTIONS:-}"
    PYTHONMALLOC=malloc
  )
else
  # OPENBLAS_NUM_THREADS=1: NumPy's OpenBLAS pool synchronises by spinning, which TSan
  # cannot see, so its workers' accesses to NumPy's arrays would be reported as races.
  sanitized+=(
    OPENBLAS_NUM_THREADS=1
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tools/tsan.supp:log_path=$reports/tsan:${TSAN_OPTIONS:-}"
  )
fi
"${sanitized[@]}" "$python" -c "import densekit; print('sanitize.sh: testing', densekit.__file__)"

# -- the tests -------------------------------------------------------------------------------
if [[ $# -eq 0 && $mode == address ]]; then
  # The kernel and binding tests (the model layer above them is Python over the same calls).
  # Left out: the fuzzer test, which runs the fuzzer under an address-space limit (it runs
  # below without one), the thread tests that measure time (sanitized kernels are slower;
  # the busy-thread test reads the GIL's contention during a kernel call, which a sanitized
  # call's timing changed once in three CI runs: [1, 1, 2, 1] threads where 1 was expected),
  # and the 1024^3 cases of the packed-weights test (28 s and 14 s sanitized, 12% of the two
  # workers' time; its smaller shapes, 64x1024x1024 among them, stay).
  set -- tests/test_activations.py tests/test_dense.py tests/test_dense_chain.py \
    tests/test_losses.py tests/test_optim.py tests/test_data.py tests/test_gemm_isa.py \
    tests/test_threads.py tests/test_fuzz_bindings.py tests/test_bf16.py tests/test_int8.py \
    tests/test_normalization.py tests/test_bf16_dense.py tests/test_metric_kernels.py \
    --deselect tests/test_fuzz_bindings.py::test_random_calls_return_or_raise_a_clear_error \
    --deselect tests/test_bf16_dense.py::test_every_forced_path_gives_the_same_bits \
    --deselect tests/test_threads.py::test_a_busy_python_thread_keeps_a_core \
    --deselect "tests/test_dense.py::test_packed_weights_give_the_bits_of_w[1024-1024-1024-float64]" \
    --deselect "tests/test_dense.py::test_packed_weights_give_the_bits_of_w[1024-1024-1024-float32]"
  # On DENSEKIT_SANITIZE_WORKERS pytest-xdist workers (2 by default) where it is installed
  # (the test extra has it): 178 s instead of 244 s serially on 2 cores (Intel Xeon, 2026-12).
  # Each worker is a sanitized process with its own reports.
  workers="${DENSEKIT_SANITIZE_WORKERS:-2}"
  if [[ $workers -gt 1 ]] && "$python" -c "import xdist" 2>/dev/null; then
    set -- -n "$workers" "$@"
  fi
elif [[ $# -eq 0 ]]; then
  # Callers on several Python threads and kernels on several pool threads. Left out: the
  # three tests that require an OpenMP build, the two that fork while threads run and then
  # start threads in the child, which TSan does not support (it ends the child), and
  # test_hogwild.py: Hogwild! is lock-free by design, one worker's optimizer step writes the
  # weights another's dense_forward reads, and TSan reports exactly that race.
  set -- tests/test_threads.py tests/test_async.py tests/test_pipeline.py \
    tests/test_dense_chain.py tests/test_data.py \
    --deselect tests/test_threads.py::test_build_reports_openmp \
    --deselect tests/test_threads.py::test_threadpoolctl_limit_is_honoured \
    --deselect tests/test_async.py::test_openmp_workers_spin_briefly_unless_the_user_chose \
    --deselect tests/test_threads.py::test_forked_child_does_not_hang \
    --deselect tests/test_async.py::test_a_child_forked_during_background_training_trains_and_predicts
fi
# A finding fails the run: it stops the process (a failed test, or pytest's own end), and any
# report written, a child process's included, is shown and fails the run even if the tests
# passed. (ASan's notes on allocations it refused, MemoryError for Python, are no finding.)
findings() {
  local found
  found="$(grep -lE "ERROR: |runtime error:|WARNING: ThreadSanitizer|SUMMARY:|CHECK failed|Dying" \
    "$reports"/* 2>/dev/null || true)"
  [[ -z $found ]] && return 0
  for file in $found; do
    echo "==== $file" >&2
    head -n 80 "$file" >&2
  done
  echo "sanitize.sh: sanitizer reports above (all in $reports)" >&2
  return 1
}

start=$(date +%s)
status=0
"${sanitized[@]}" "$python" -m pytest -p no:cacheprovider -q "$@" || status=$?
findings || status=1
[[ $status -eq 0 ]] || exit "$status"
echo "sanitize.sh: tests passed in $(($(date +%s) - start)) s"

if [[ $mode == address ]]; then
  examples="${DENSEKIT_FUZZ_EXAMPLES:-4000}"
  start=$(date +%s)
  "${sanitized[@]}" "$python" -m tools.fuzz_bindings --examples "$examples" --memory-gib 0 ||
    status=$?
  findings || status=1
  [[ $status -eq 0 ]] || exit "$status"
  echo "sanitize.sh: $examples fuzzer calls in $(($(date +%s) - start)) s"
fi
