"""One Adam step, in place, over a flat parameter vector of 1M and 10M elements: densekit's
adam_step against torch.optim.Adam (foreach, and fused where torch has it) and NumPy.

Memory-bound, so reported in GB/s: bytes = 7 N s (read param, grad, m, v; write param, m, v).
Every library starts from the same state at step 10 (random m, v), so the first step, which is
the one verified, exercises the bias corrections; lr = 1e-3, betas and eps are the defaults
(0.9, 0.999, 1e-8) of densekit and torch alike.
Run alone: python -m bench.optim [options].
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from densekit import kernels

from . import peers
from .config import Settings
from .harness import Case, Impl, Skip, Tolerance, random_array

FAMILY = "optim"
SIZES = (1_000_000, 10_000_000)
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
FIRST_STEP = 10  # the state given to every library is that after this many steps
ADAM_TOLERANCE = {
    "float32": Tolerance(rtol=1e-5, atol=1e-6),
    "float64": Tolerance(rtol=1e-12, atol=1e-14),
}


class NumpyAdam:
    """torch.optim.Adam's update, written with in-place ufuncs and one scratch vector."""

    def __init__(self, param, grad, m, v):
        self.param, self.grad, self.m, self.v = param, grad, m, v
        self.scratch = np.empty_like(param)
        self.step = FIRST_STEP

    def __call__(self):
        self.step += 1
        correction1 = 1 - BETA1**self.step
        correction2 = 1 - BETA2**self.step
        g, s = self.grad, self.scratch
        self.m *= BETA1
        np.multiply(g, 1 - BETA1, out=s)
        self.m += s
        self.v *= BETA2
        np.multiply(g, g, out=s)
        s *= 1 - BETA2
        self.v += s
        np.sqrt(self.v, out=s)
        s *= 1 / math.sqrt(correction2)
        s += EPS
        np.divide(self.m, s, out=s)
        s *= -LR / correction1
        self.param += s
        return self.param, self.m, self.v


def _torch_adam(param, grad, m, v, **flavour):
    """A torch.optim.Adam over one parameter, its state set to (m, v) after FIRST_STEP steps."""
    torch = peers.torch
    p = torch.nn.Parameter(torch.from_numpy(param))
    p.grad = torch.from_numpy(grad)
    optimizer = torch.optim.Adam([p], lr=LR, betas=(BETA1, BETA2), eps=EPS, **flavour)
    optimizer.state[p] = {
        "step": torch.tensor(float(FIRST_STEP)),
        "exp_avg": torch.from_numpy(m),
        "exp_avg_sq": torch.from_numpy(v),
    }
    state = optimizer.state[p]

    def run():
        optimizer.step()
        return p, state["exp_avg"], state["exp_avg_sq"]

    return run


def adam_case(size: int, dtype: str, threads: int) -> Case:
    rng = np.random.default_rng(size)
    param = random_array(rng, (size,), dtype)
    grad = random_array(rng, (size,), dtype)
    m = random_array(rng, (size,), dtype) * 0.1
    v = np.square(random_array(rng, (size,), dtype)) * 0.01

    def state():  # each library updates its own copy
        return param.copy(), m.copy(), v.copy()

    p_dk, m_dk, v_dk = state()
    step = [FIRST_STEP]

    def run_densekit():
        step[0] += 1
        kernels.adam_step(p_dk, grad, m_dk, v_dk, step=step[0], lr=LR, num_threads=threads)
        return p_dk, m_dk, v_dk

    p_np, m_np, v_np = state()
    case_peers = [Impl("numpy", NumpyAdam(p_np, grad, m_np, v_np))]
    notes = []
    if peers.torch is not None:
        for library, flavour in (("torch-foreach", "foreach"), ("torch-fused", "fused")):
            p_t, m_t, v_t = state()
            try:
                run = _torch_adam(p_t, grad, m_t, v_t, **{flavour: True})
            except (RuntimeError, ValueError, TypeError) as exc:
                notes.append(f"torch Adam {flavour}=True unavailable: {exc}")
            else:
                case_peers.append(Impl(library, run))

    return Case(
        family=FAMILY,
        name="adam step",
        shape=f"{size // 1_000_000}M",
        dtype=dtype,
        threads=threads,
        work=7.0 * size * np.dtype(dtype).itemsize,
        unit="GB/s",
        work_formula="7*N*itemsize (read param, grad, m, v; write param, m, v)",
        tolerance=ADAM_TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=case_peers,
        notes=notes,
    )


def cases(settings: Settings) -> Iterator[Case | Skip]:
    if not hasattr(kernels, "adam_step"):
        yield Skip(FAMILY, "adam step", "densekit.kernels has no adam_step")
        return
    for dtype in settings.dtypes():
        for size in SIZES:
            yield adam_case(size, dtype, settings.threads)


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
