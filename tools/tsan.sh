#!/usr/bin/env bash
# ThreadSanitizer over densekit's thread pool and the concurrent tests: an instrumented build
# without OpenMP in build/tsan (see tools/sanitize.sh and docs/guide/development.md).
#   tools/tsan.sh                          # the concurrent tests
#   tools/tsan.sh tests/test_threads.py -k concurrent
exec "$(dirname "$0")/sanitize.sh" --thread "$@"
