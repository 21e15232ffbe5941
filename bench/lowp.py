"""Low precision: densekit's bfloat16 products and int8 inference against torch's and against
densekit's own float32, side by side.

- ``matmul bf16`` (n, k, m): x (n, k) @ w (k, m), bf16 inputs, float32 accumulation, bf16 out;
  peers torch ``matmul`` on bf16 tensors (oneDNN) and densekit float32 ``dense_forward``.
- ``dense bf16 relu``: the layer API, ``dense_forward_bf16`` with the weights rounded and packed
  once (``Bf16Weights``, as a model holds them), float32 x rounded while packed, bias and relu
  in the epilogue, float32 out; peers torch ``F.linear`` + ``relu_`` on bf16 tensors and
  densekit float32. ``matmul bf16`` packs b on every call.
- ``dense bf16 relu fwd+bwd``: a mixed_bfloat16 layer's training work, the float32 weights
  packed (both layouts), x, y, dy and dx bf16 arrays (torch's tensors are bf16 too), relu's
  derivative from y, dw and db in float32; peers torch ``relu(F.linear)`` on bf16 tensors
  with ``backward`` and densekit float32 (on the same values in float32).
- ``dense int8 relu``: float32 x, int8 weights per output column, x quantized per row on the
  fly; peers ``torch.ao.quantization.quantize_dynamic`` of a ``Linear`` + ReLU (fbgemm) and
  densekit float32.
- ``train step mixed_bfloat16`` (batch x 784-256-128-10, Adam): densekit's model with every
  Dense under the "mixed_bfloat16" policy (train_on_batch); peers densekit float32 and torch
  eager under ``autocast(device_type="cpu", dtype=torch.bfloat16)``, from the same weights on
  the same batches (checked: the first step's loss, which bf16 moves by well under 2%).
- ``predict int8``: ``predict`` of the 784-256-128-10 model after ``densekit.quantize``;
  peers torch ``quantize_dynamic`` of the same MLP (Linear layers, fbgemm) and densekit's
  float32 ``predict``.
The rates are GFLOP/s of the float32 product (2 n k m) for every library, so ratios compare
times; the report's percentage is of the bf16 / int8 path's own peak (``_fma_peak``: its
instruction on register chains, e.g. vdpbf16ps counts 4 operations per lane, vpdpbusd 8).
Every case runs at 1 thread, then at the run's thread count when that is more; the summary
states each target per thread count with its ceiling (the ratio at 100% of the path's peak).
Run alone: python -m bench.lowp [options].
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

import densekit
from densekit import kernels

from . import peers
from .config import Settings
from .gemm import shape_name
from .harness import Case, Impl, Skip, Tolerance, grid_array, random_array
from .train import (
    MLP,
    STEP_FORMULA,
    cycling,
    densekit_model,
    initial_weights,
    predict_flop,
    random_batches,
    step_flop,
    torch_model,
)
from .train import shape_name as mlp_shape_name

FAMILY = "lowp"
# the shapes, then the MLP's output layer (10 columns: the products run transposed)
SHAPES = (
    (1024, 1024, 1024),
    (4096, 512, 512),
    (256, 784, 256),
    (64, 784, 256),
    (1, 784, 256),
    (256, 128, 10),
)
QUICK_SHAPES = ((1024, 1024, 1024), (256, 784, 256), (64, 784, 256))
# bf16 outputs are rounded to 8 bits: half an ulp is 2^-9 of the value; sums in a different
# order differ by a few float32 ulp before that rounding. int8 peers quantize differently
# (torch: one asymmetric 7-bit scale per tensor of x): about 1% of the output's scale apart.
BF16_TOLERANCE = Tolerance(rtol=1.6e-2, atol=4e-3)
INT8_TOLERANCE = Tolerance(rtol=0.0, atol=6e-2)


def _bf16():
    import ml_dtypes

    return ml_dtypes.bfloat16


def _case(name, shape, dtype, threads, work, formula, tolerance, run, case_peers, note) -> Case:
    """A case of this family: GFLOP/s, torch on the same thread count."""
    return Case(
        family=FAMILY,
        name=name,
        shape=shape,
        dtype=dtype,
        threads=threads,
        work=work,
        unit="GFLOP/s",
        work_formula=formula,
        tolerance=tolerance,
        densekit=Impl("densekit", run),
        peers=case_peers,
        context=lambda: peers.torch_threads(threads),
        notes=[note],
    )


def _torch_dynamic_int8(module):
    """``torch.ao.quantization.quantize_dynamic`` of the module's Linear layers (fbgemm)."""
    torch = peers.torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def bf16_case(name: str, n: int, k: int, m: int, threads: int, epilogue: bool) -> Case:
    rng = np.random.default_rng(n * 31 + k * 7 + m)
    x32 = random_array(rng, (n, k), "float32")
    w32 = random_array(rng, (k, m), "float32")
    b32 = random_array(rng, (m,), "float32") if epilogue else None
    x, w = kernels.to_bfloat16(x32), kernels.to_bfloat16(w32)
    act = "relu" if epilogue else "linear"
    # densekit's buffers from kernels.empty (on a cache line, as torch allocates its tensors)
    y16 = kernels.empty((n, m), _bf16())
    y32 = kernels.empty((n, m), np.float32)
    # The float32 peer runs on the bf16-rounded values, so that only the products differ.
    x_r, w_r = kernels.from_bfloat16(x), kernels.from_bfloat16(w)
    y_dense = kernels.empty((n, m), np.float32)

    if epilogue:  # the layer API: the weights rounded and packed once (Bf16Weights)
        packed = kernels.Bf16Weights(w_r)

        def run_densekit():
            return kernels.dense_forward_bf16(
                x_r, packed, b32, activation=act, out=y_dense, num_threads=threads
            )

    else:  # the product: op(b) packed on every call

        def run_densekit():
            return kernels.matmul_bf16(
                x, w, out=y16, bias=b32, activation=act, out_dtype="bfloat16", num_threads=threads
            )

    def run_fp32():
        return kernels.dense_forward(x_r, w_r, b32, activation=act, out=y32, num_threads=threads)

    case_peers = []
    if peers.torch is not None:
        torch = peers.torch
        x_t = torch.from_numpy(x_r).to(torch.bfloat16)
        w_t = torch.from_numpy(w_r).to(torch.bfloat16)
        y_t = torch.empty((n, m), dtype=torch.bfloat16)
        if epilogue:
            wt_t = w_t.t().contiguous()  # F.linear's (out, in) layout
            b_t = torch.from_numpy(b32).to(torch.bfloat16)
            linear = torch.nn.functional.linear

            def run_torch():
                return linear(x_t, wt_t, b_t).relu_()
        else:
            matmul = torch.matmul

            def run_torch():
                return matmul(x_t, w_t, out=y_t)

        case_peers.append(Impl("torch", run_torch))
    case_peers.append(Impl("densekit fp32", run_fp32))
    return _case(
        name,
        shape_name(n, k, m),
        "bfloat16",
        threads,
        2.0 * n * k * m,
        "2*n*k*m",
        BF16_TOLERANCE,
        run_densekit,
        case_peers,
        "peers' inputs are the bf16-rounded values (float32 peer: widened)",
    )


def bf16_forward_backward_case(n: int, k: int, m: int, threads: int) -> Case:
    """A dense layer's training work in bf16: the float32 weights rounded and packed (both
    layouts: dx needs w^T), forward with relu, then dx, dw, db in float32 accumulation, as a
    mixed_bfloat16 layer runs them once per step; x, y, dy and dx are bf16 arrays, as torch's
    tensors are. Peers: torch ``relu(F.linear)`` on bf16 tensors with ``backward`` (its
    gradients in bf16) and densekit float32 ``dense_forward`` + ``dense_backward``."""
    rng = np.random.default_rng(n * 31 + k * 7 + m + 2)
    # Values on a 1/8 grid, exact in bf16: every library gets the same pre-activations, so
    # relu's mask (and with it dx, dw, db) cannot differ by a rounding at zero.
    x = grid_array(rng, (n, k), "float32")
    w = grid_array(rng, (k, m), "float32")
    b = grid_array(rng, (m,), "float32")
    dy = grid_array(rng, (n, m), "float32")
    x16, dy16 = kernels.to_bfloat16(x), kernels.to_bfloat16(dy)
    packed = kernels.Bf16Weights(w, transposed=True)

    def buffers():  # y, z (the pre-activation), dx, dw, db
        return (
            kernels.empty((n, m), np.float32),
            kernels.empty((n, m), np.float32),
            kernels.empty(x.shape, x.dtype),
            kernels.empty(w.shape, w.dtype),
            kernels.empty(b.shape, b.dtype),
        )

    y32, z32, dx32, dw32, db32 = buffers()
    y, dx = kernels.empty((n, m), _bf16()), kernels.empty((n, k), _bf16())
    dw, db = kernels.empty(w.shape, w.dtype), kernels.empty(b.shape, b.dtype)

    def run_densekit():
        packed.pack(w, num_threads=threads)  # once per optimizer step in training
        kernels.dense_forward_bf16(
            x16, packed, b, activation="relu", out=y, out_dtype="bfloat16", num_threads=threads
        )
        kernels.dense_backward_bf16(
            dy16,
            x16,
            packed,
            y=y,
            activation="relu",
            dx_out=dx,
            dw_out=dw,
            db_out=db,
            dx_dtype="bfloat16",
            num_threads=threads,
        )
        return y, dx, dw, db

    def run_fp32():
        kernels.dense_forward(x, w, b, "relu", out=y32, preact_out=z32, num_threads=threads)
        kernels.dense_backward(
            dy,
            x,
            w,
            preact=z32,
            activation="relu",
            dx_out=dx32,
            dw_out=dw32,
            db_out=db32,
            num_threads=threads,
        )
        return y32, dx32, dw32, db32

    case_peers = []
    if peers.torch is not None:
        torch, functional = peers.torch, peers.torch.nn.functional
        x_t = torch.from_numpy(x).to(torch.bfloat16).requires_grad_()
        w_t = torch.from_numpy(np.ascontiguousarray(w.T)).to(torch.bfloat16).requires_grad_()
        b_t = torch.from_numpy(b).to(torch.bfloat16).requires_grad_()
        dy_t = torch.from_numpy(dy).to(torch.bfloat16)

        def run_torch():
            x_t.grad = w_t.grad = b_t.grad = None
            y_t = functional.relu(functional.linear(x_t, w_t, b_t))
            y_t.backward(dy_t)
            return y_t, x_t.grad, w_t.grad.T, b_t.grad

        case_peers.append(Impl("torch", run_torch))
    case_peers.append(Impl("densekit fp32", run_fp32))
    return _case(
        "dense bf16 relu fwd+bwd",
        shape_name(n, k, m),
        "bfloat16",
        threads,
        6.0 * n * k * m,
        "6*n*k*m (y, dx, dw)",
        BF16_TOLERANCE,
        run_densekit,
        case_peers,
        "densekit: the weights packed each call, float32 gradients; torch: bf16 tensors and "
        "gradients; inputs on a 1/8 grid",
    )


def int8_case(n: int, k: int, m: int, threads: int) -> Case:
    rng = np.random.default_rng(n * 37 + k * 11 + m)
    x = random_array(rng, (n, k), "float32")
    w = random_array(rng, (k, m), "float32")
    b = random_array(rng, (m,), "float32")
    qw = kernels.QuantizedWeights.quantize(w)
    y = kernels.empty((n, m), np.float32)
    y32 = kernels.empty((n, m), np.float32)

    def run_densekit():
        return kernels.dense_forward_int8(x, qw, b, activation="relu", out=y, num_threads=threads)

    def run_fp32():
        return kernels.dense_forward(x, w, b, activation="relu", out=y32, num_threads=threads)

    case_peers = []
    if peers.torch is not None:
        torch = peers.torch
        linear = torch.nn.Linear(k, m)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            linear.bias.copy_(torch.from_numpy(b))
        quantized = _torch_dynamic_int8(torch.nn.Sequential(linear, torch.nn.ReLU()))
        x_t = torch.from_numpy(x)
        no_grad = torch.no_grad

        def run_torch():
            with no_grad():
                return quantized(x_t)

        case_peers.append(Impl("torch", run_torch))
    case_peers.append(Impl("densekit fp32", run_fp32))
    return _case(
        "dense int8 relu",
        shape_name(n, k, m),
        "int8",
        threads,
        2.0 * n * k * m,
        "2*n*k*m",
        INT8_TOLERANCE,
        run_densekit,
        case_peers,
        "torch: quantize_dynamic (per-tensor 7-bit x, fbgemm); densekit: per-row x",
    )


TRAIN_BATCHES = (64, 256)
PREDICT_BATCHES = (1, 256)
LOSS_TOLERANCE = Tolerance(rtol=2e-2, atol=0.0)
# Probabilities of an int8 model against torch's (another activation quantization): a few
# hundredths of the largest probability apart.
PREDICT_INT8_TOLERANCE = Tolerance(rtol=0.0, atol=5e-2)


def mixed_step_case(batch: int, threads: int) -> Case:
    weights = initial_weights(MLP, "float32")
    batches = random_batches(np.random.default_rng(5), MLP, batch, "float32", 8)
    mixed = densekit_model(MLP, weights, "float32", policy="mixed_bfloat16")
    full = densekit_model(MLP, weights, "float32")
    next_mixed, next_full = cycling(batches), cycling(batches)
    case_peers = [Impl("densekit fp32", lambda: full.train_on_batch(*next_full()))]
    if peers.torch is not None:
        torch = peers.torch
        _, torch_step, _ = torch_model(MLP, weights, "float32")
        torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
        next_torch = cycling(torch_batches)
        autocast = torch.autocast

        def run_torch():
            with autocast(device_type="cpu", dtype=torch.bfloat16):
                return torch_step(*next_torch()).float()

        case_peers.insert(0, Impl("torch", run_torch))
    return _case(
        "train step mixed_bfloat16",
        mlp_shape_name(MLP, batch),
        "bfloat16",
        threads,
        step_flop(MLP, batch),
        STEP_FORMULA,
        LOSS_TOLERANCE,
        lambda: mixed.train_on_batch(*next_mixed()),
        case_peers,
        "Adam; checked: the first step's loss; torch: autocast bf16 (oneDNN)",
    )


def int8_predict_case(batch: int, threads: int) -> Case:
    weights = initial_weights(MLP, "float32")
    full = densekit_model(MLP, weights, "float32")
    quantized = densekit.quantize(full)
    x = np.random.default_rng(6).standard_normal((batch, MLP[0])).astype(np.float32)
    case_peers = []
    if peers.torch is not None:
        torch = peers.torch
        net_q = _torch_dynamic_int8(torch_model(MLP, weights, "float32")[0])
        x_t = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode():
                return torch.softmax(net_q(x_t), dim=1)

        case_peers.append(Impl("torch", run_torch))
    case_peers.append(Impl("densekit fp32", lambda: full.predict(x, batch_size=batch)))
    return _case(
        "predict int8",
        mlp_shape_name(MLP, batch),
        "int8",
        threads,
        predict_flop(MLP, batch),
        "2n*sum(k*m)",
        PREDICT_INT8_TOLERANCE,
        lambda: quantized.predict(x, batch_size=batch),
        case_peers,
        "densekit.quantize (per-row x, per-column w); torch: quantize_dynamic (fbgemm)",
    )


def cases(settings: Settings) -> Iterator[Case | Skip]:
    """Every case at 1 thread, then again at the run's thread count when that is more (the
    issue asks for both in one run)."""
    try:
        _bf16()
    except ImportError:
        yield Skip(FAMILY, "bf16", "ml_dtypes is not installed")
        return
    for threads in sorted({1, settings.threads}):
        for n, k, m in SHAPES:
            if settings.quick and (n, k, m) not in QUICK_SHAPES:
                if threads == 1:
                    yield Skip(FAMILY, f"lowp {shape_name(n, k, m)}", "--quick")
                continue
            yield bf16_case("matmul bf16", n, k, m, threads, epilogue=False)
            yield bf16_case("dense bf16 relu", n, k, m, threads, epilogue=True)
            yield bf16_forward_backward_case(n, k, m, threads)
            yield int8_case(n, k, m, threads)
        for batch in TRAIN_BATCHES:
            yield mixed_step_case(batch, threads)
        for batch in PREDICT_BATCHES:
            yield int8_predict_case(batch, threads)


# The targets: (case, shape, peer, speed-up over the peer), measured in one run.
TARGETS = (
    ("matmul bf16", "1024x1024x1024", "torch", 1.1),
    ("matmul bf16", "4096x512x512", "torch", 1.1),
    ("dense bf16 relu", "256x784x256", "torch", 1.3),
    ("dense bf16 relu", "64x784x256", "torch", 1.3),
    ("dense bf16 relu fwd+bwd", "256x784x256", "torch", 1.3),
    ("dense bf16 relu fwd+bwd", "64x784x256", "torch", 1.3),
    ("train step mixed_bfloat16", "256x784-256-128-10", "densekit fp32", 1.7),
    ("train step mixed_bfloat16", "256x784-256-128-10", "torch", 3.0),
    ("predict int8", "256x784-256-128-10", "torch", 1.2),
    ("predict int8", "256x784-256-128-10", "densekit fp32", 2.5),
)
PEAK_TARGETS = (("matmul bf16", "1024x1024x1024", 0.9), ("matmul bf16", "4096x512x512", 0.9))
# On a CPU whose bf16 products run on AMX tiles: the products >= 4x densekit float32.
AMX_TARGETS = tuple(
    ("matmul bf16", shape, "densekit fp32", 4.0)
    for shape in ("1024x1024x1024", "4096x512x512", "256x784x256", "64x784x256")
)


def _ceiling(record, peer: str, peaks: dict | None) -> float | None:
    """The speed-up over `peer` that densekit would have at its path's multiply-add peak (the
    bf16 or int8 instruction on register chains, this run's figure at the record's thread
    count): no product can go faster, so a target above it cannot be met on this CPU. For a
    training step every FLOP is counted at the bf16 rate, which only raises the bound."""
    peer_rate = record.rate(peer)
    peak = (peaks or {}).get(record.dtype, {}).get(record.threads)
    if not (peer_rate and peak):
        return None
    return peak / peer_rate


def _ratio_verdict(record, peer: str, target: float, peaks: dict | None) -> str:
    """A ratio target's verdict: the ratio, met or MISSED, and its ceiling where peaks give
    one ("not measured" without a record or a ratio)."""
    ratio = None if record is None else record.ratio(peer)
    if ratio is None:
        return "not measured"
    verdict = f"{ratio:.2f}x, {'met' if ratio >= target else 'MISSED'}"
    ceiling = _ceiling(record, peer, peaks)
    if ceiling is not None:
        verdict += f" (ceiling {ceiling:.2f}x"
        verdict += ": out of reach on this CPU)" if ceiling < target else ")"
    return verdict


def summarize(records: list, peaks: dict | None = None, bf16_path: str | None = None) -> list[str]:
    """The targets per thread count; bf16_path: the run's bf16 path (this process's when
    None), which decides whether the AMX targets apply."""
    if bf16_path is None:
        bf16_path = densekit.cpu_info()["isa"]["bfloat16"]
    mine = {(r.name, r.shape, r.threads): r for r in records if r.family == FAMILY}
    lines = []
    for threads in sorted({threads for _, _, threads in mine}):
        lines.append(
            f"low-precision targets at {threads} thread{'s' if threads > 1 else ''} (densekit "
            "speed / peer speed, medians of this run; ceiling: the ratio densekit would reach "
            "at 100% of its path's peak):"
        )
        for name, shape, peer, target in TARGETS:
            verdict = _ratio_verdict(mine.get((name, shape, threads)), peer, target, peaks)
            lines.append(f"  {name:<26} {shape:<19} vs {peer:<13} >= {target:g}x: {verdict}")
        if bf16_path != "amx":
            lines.append(
                f"  AMX: bf16 products >= 4x densekit fp32: not measured (no AMX path on this "
                f"CPU/build: the bf16 path is {bf16_path})"
            )
        for name, shape, peer, target in AMX_TARGETS if bf16_path == "amx" else ():
            verdict = _ratio_verdict(mine.get((name, shape, threads)), peer, target, None)
            lines.append(f"  AMX: {name:<21} {shape:<19} vs {peer:<13} >= {target:g}x: {verdict}")
        for name, shape, target in PEAK_TARGETS:
            record = mine.get((name, shape, threads))
            rate = None if record is None else record.rate("densekit")
            peak = (peaks or {}).get("bfloat16", {}).get(threads)
            verdict = (
                "not measured"
                if not (rate and peak)
                else (
                    f"{100 * rate / peak:.0f}% of {peak:.0f} GFLOP/s, "
                    f"{'met' if rate >= target * peak else 'MISSED'}"
                )
            )
            lines.append(
                f"  {name:<26} {shape:<19} of the bf16 peak >= {100 * target:.0f}%: {verdict}"
            )
    return lines


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
