"""Loss value and gradient in one call: softmax cross-entropy with int64 labels, and mean
squared error, against torch (forward + backward on inputs requiring grad) and NumPy.

Memory-bound, so reported in GB/s:
  softmax cross-entropy, logits (n, c): bytes = 2 n c s + 8 n (read logits and labels,
  write the gradient; s = bytes per element); MSE over N elements: bytes = 3 N s (read
  prediction and target, write the gradient). Reductions are "mean".
Run alone: python -m bench.losses [options].
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from densekit import kernels

from . import peers
from .config import Settings
from .harness import Case, Impl, Skip, Tolerance, random_array

FAMILY = "losses"
CROSS_ENTROPY_SHAPES = ((65536, 10), (8192, 1000), (512, 32000))
MSE_SIZE = 16 * 2**20
LOSS_TOLERANCE = {
    "float32": Tolerance(rtol=1e-4, atol=1e-6),
    "float64": Tolerance(rtol=1e-10, atol=1e-13),
}


def torch_loss(name: str, prediction: np.ndarray, target: np.ndarray) -> list[Impl]:
    """torch's F.<name> forward + backward as a peer (none without torch): returns the loss
    and the prediction's gradient."""
    if peers.torch is None:
        return []
    loss_function = getattr(peers.torch.nn.functional, name)
    prediction_t = peers.torch.from_numpy(prediction).requires_grad_()
    target_t = peers.torch.from_numpy(target)

    def run_torch():
        prediction_t.grad = None
        loss = loss_function(prediction_t, target_t)
        loss.backward()
        return loss, prediction_t.grad

    return [Impl("torch", run_torch)]


def cross_entropy_case(n: int, c: int, dtype: str, threads: int) -> Case:
    rng = np.random.default_rng(n + c)
    logits = random_array(rng, (n, c), dtype) * 4
    labels = rng.integers(0, c, size=n, dtype=np.int64)
    grad = {lib: np.empty((n, c), dtype) for lib in ("densekit", "numpy")}
    row_max = np.empty((n, 1), dtype)
    row_sum = np.empty((n, 1), dtype)
    rows = np.arange(n)

    def run_densekit():
        return kernels.softmax_cross_entropy(
            logits, labels, grad_out=grad["densekit"], num_threads=threads
        )

    def run_numpy():
        g = grad["numpy"]
        np.max(logits, axis=1, keepdims=True, out=row_max)
        np.subtract(logits, row_max, out=g)
        np.exp(g, out=g)
        np.sum(g, axis=1, keepdims=True, out=row_sum)
        # loss_i = log(sum_j exp(z_ij - max_i)) + max_i - z_i,label_i
        loss = (np.log(row_sum).sum() + row_max.sum() - logits[rows, labels].sum()) / n
        g /= row_sum
        g[rows, labels] -= 1
        g *= 1 / n
        return loss, g

    case_peers = [Impl("numpy", run_numpy), *torch_loss("cross_entropy", logits, labels)]

    itemsize = np.dtype(dtype).itemsize
    return Case(
        family=FAMILY,
        name="softmax CE",
        shape=f"{n}x{c}",
        dtype=dtype,
        threads=threads,
        work=2.0 * n * c * itemsize + 8.0 * n,
        unit="GB/s",
        work_formula="2*n*c*itemsize + 8*n (read logits, labels; write grad)",
        tolerance=LOSS_TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=case_peers,
        notes=["int64 labels, reduction mean; torch: F.cross_entropy forward + backward"],
    )


def mse_case(size: int, dtype: str, threads: int) -> Case:
    rng = np.random.default_rng(size)
    prediction = random_array(rng, (size, 1), dtype)
    target = random_array(rng, (size, 1), dtype)
    grad = {lib: np.empty((size, 1), dtype) for lib in ("densekit", "numpy")}
    squares = np.empty((size, 1), dtype)

    def run_densekit():
        return kernels.mse(prediction, target, grad_out=grad["densekit"], num_threads=threads)

    def run_numpy():
        g = np.subtract(prediction, target, out=grad["numpy"])
        # a pairwise sum: np.vdot's float32 accumulation drifts by ~5e-5 over 16M terms
        loss = np.multiply(g, g, out=squares).sum() / size
        g *= 2 / size
        return loss, g

    case_peers = [Impl("numpy", run_numpy), *torch_loss("mse_loss", prediction, target)]

    return Case(
        family=FAMILY,
        name="mse",
        shape=f"{size}x1",
        dtype=dtype,
        threads=threads,
        work=3.0 * size * np.dtype(dtype).itemsize,
        unit="GB/s",
        work_formula="3*N*itemsize (read prediction, target; write grad)",
        tolerance=LOSS_TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=case_peers,
        notes=["reduction mean; torch: F.mse_loss forward + backward"],
    )


def cases(settings: Settings) -> Iterator[Case | Skip]:
    for dtype in settings.dtypes():
        if hasattr(kernels, "softmax_cross_entropy"):
            for n, c in CROSS_ENTROPY_SHAPES:
                yield cross_entropy_case(n, c, dtype, settings.threads)
        else:
            yield Skip(
                FAMILY, f"softmax CE {dtype}", "densekit.kernels has no softmax_cross_entropy"
            )
        if hasattr(kernels, "mse"):
            yield mse_case(MSE_SIZE, dtype, settings.threads)
        else:
            yield Skip(FAMILY, f"mse {dtype}", "densekit.kernels has no mse")


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
