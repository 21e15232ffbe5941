"""What the build and the CPU offer and what densekit chose: ``cpu_info`` (a dict) and
``show_config`` (printed, as ``numpy.show_config``)."""

from __future__ import annotations

import os
import platform

from . import kernels
from ._threads import get_num_threads
from .kernels import build_info


def cpu_info() -> dict:
    """What the matrix-product engine found and chose at import.

    Returns a dict: ``features`` (CPU flags seen, e.g. ``{"avx512f": True, ...}``), ``isa``
    (the ISA in use per dtype; for "bfloat16" and "int8" the low-precision products' path:
    "amx", "avx512_bf16" / "avx512_vnni", or "emulated"), ``microkernels`` (kernel family per
    dtype, e.g. ``"avx512 14x32"``), ``available_isas`` (those this CPU and build can run, best
    first),
    ``best_isa``, ``forced`` (True when the ``DENSEKIT_ISA`` environment variable chose a
    lower ISA), ``requested`` (its value, or None) and ``note`` (why a request was not
    honoured, or "").
    """
    info = build_info()
    isa = info["gemm_isa"]
    return {
        "features": dict(info["cpu_features"]),
        "isa": {
            "float32": isa,
            "float64": isa,
            "bfloat16": kernels.bf16_config()["path"],
            "int8": kernels.int8_config()["path"],
        },
        "microkernels": {
            "float32": info["gemm_kernel_float32"],
            "float64": info["gemm_kernel_float64"],
        },
        "available_isas": list(info["gemm_isas_available"]),
        "best_isa": info["gemm_isa_best"],
        "forced": bool(info["gemm_isa_forced"]),
        "requested": info["gemm_isa_requested"],
        "note": info["gemm_isa_note"],
    }


# The environment variables densekit reads (each once, at import or at its first use).
_ENVIRONMENT = (
    "DENSEKIT_ISA",
    "DENSEKIT_BF16",
    "DENSEKIT_INT8",
    "DENSEKIT_AMX",
    "DENSEKIT_THREADING",
    "DENSEKIT_SPIN_US",
    "DENSEKIT_GEMM_TUNE",
    "OMP_NUM_THREADS",
)


def _cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what the platform reports)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def show_config(mode: str = "stdout") -> dict | None:
    """What densekit was built with and what it runs here, as ``numpy.show_config`` does.

    ``mode="stdout"`` prints it; ``mode="dicts"`` returns it as a dict instead: ``build``
    (version, compiler, OpenMP, the thread pool), ``machine`` (the CPU's model, its logical
    CPUs, those densekit may use (the affinity mask, capped by ``OMP_NUM_THREADS``), the
    default thread count, the CPU features seen), ``paths`` (per dtype:
    the product path in use, the best this CPU and build offer, those available, whether an
    environment variable forced a lower one, its value, and why a request was not honoured),
    ``amx_note`` (why the CPU's AMX tiles are not used, or "") and ``environment`` (the
    densekit variables set in this process). :func:`cpu_info`, ``kernels.bf16_config()`` and
    ``kernels.int8_config()`` hold the same facts as separate dicts.
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode: expected 'stdout' or 'dicts', got {mode!r}")
    info = build_info()
    isa = info["gemm_isa"]
    paths = {}
    for dtype, kernel in (("float32", "gemm_kernel_float32"), ("float64", "gemm_kernel_float64")):
        paths[dtype] = {
            "path": isa,
            "kernel": info[kernel],
            "best": info["gemm_isa_best"],
            "available": list(info["gemm_isas_available"]),
            "forced": bool(info["gemm_isa_forced"]),
            "requested": info["gemm_isa_requested"] or "",
            "note": info["gemm_isa_note"],
        }
    lowp = {"bfloat16": kernels.bf16_config(), "int8": kernels.int8_config()}
    for dtype, config in lowp.items():
        paths[dtype] = {key: config[key] for key in ("path", "best", "forced", "requested", "note")}
        paths[dtype]["available"] = list(config["available"])
    report = {
        "build": {
            "version": info["version"],
            "compiler": info.get("compiler", "unknown"),
            "openmp": info["openmp_version"] if info["openmp"] else None,
            "threading": info["threading"],
            "spin_us": info["spin_us"],
        },
        "machine": {
            "cpu": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": info["hardware_threads"],
            "threads": get_num_threads(),
            "features": [name for name, present in info["cpu_features"].items() if present],
        },
        "paths": paths,
        "amx_note": lowp["bfloat16"]["amx_note"] or lowp["int8"]["amx_note"],
        "environment": {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ},
    }
    if mode == "dicts":
        return report
    build, machine = report["build"], report["machine"]
    openmp = f"OpenMP {build['openmp']}" if build["openmp"] is not None else "no OpenMP"
    lines = [
        f"densekit {build['version']} (compiler {build['compiler']}, {openmp}, "
        f"threading {build['threading']!r}, spin {build['spin_us']} us)",
        f"CPU: {machine['cpu']}; {machine['logical_cpus']} logical CPUs, "
        f"{machine['usable_cpus']} usable (affinity, OMP_NUM_THREADS), "
        f"{machine['threads']} threads by default",
        f"  features: {' '.join(machine['features']) or 'none'}",
        "products:",
    ]
    for dtype, path in paths.items():
        kernel = f" {path['kernel']!r}" if "kernel" in path else ""
        state = f"forced by {path['requested']!r}" if path["forced"] else f"best {path['best']}"
        lines.append(
            f"  {dtype:<9} {path['path']}{kernel} ({state}; available: "
            f"{', '.join(path['available'])})"
        )
        if path["note"]:
            lines.append(f"            note: {path['note']}")
    if report["amx_note"]:
        lines.append(f"  AMX: {report['amx_note']}")
    environment = report["environment"]
    lines.append(
        "environment: "
        + (", ".join(f"{k}={v!r}" for k, v in environment.items()) if environment else "none set")
    )
    print("\n".join(lines))
    return None
