#!/usr/bin/env bash
# Release wheels for this platform with cibuildwheel, from an sdist: the configuration is
# [tool.cibuildwheel] in the sdist's pyproject.toml (CIBW_* variables refine it, e.g.
# CIBW_ARCHS). Run by .github/workflows/wheels.yml; on Linux it needs Docker or Podman.
#
#   tools/cibw.sh SDIST [OUT]       (OUT default: wheelhouse)
#   tools/cibw.sh --list            the build identifiers this configuration selects
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${DENSEKIT_CIBW_VENV:-$here/build/cibw-venv}"
if [[ ! -x $venv/bin/cibuildwheel ]]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q "cibuildwheel==4.3.5"
fi
if [[ ${1:-} == --list ]]; then
  cd "$here"
  for platform in linux macos; do
    "$venv/bin/cibuildwheel" --print-build-identifiers --platform "$platform"
  done
  exit 0
fi
sdist="${1:?usage: tools/cibw.sh SDIST [OUT] | --list}"
"$venv/bin/cibuildwheel" --output-dir "${2:-wheelhouse}" "$sdist"
ls -l "${2:-wheelhouse}"
