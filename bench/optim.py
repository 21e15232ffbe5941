"""Optimizer steps, in place, over a flat parameter vector of 1M and 10M elements.

- Adam: densekit's adam_step against torch.optim.Adam (foreach, and fused where torch has it)
  and NumPy. Every library starts from the same state at step 10 (random m, v), so the first
  step, which is the one verified, exercises the bias corrections.
- Adam with Keras's rule (convention="keras"): densekit against Keras 3's own Adam as its
  torch backend runs it (torch._foreach calls in Keras's order).
- NAdam, Adamax, Adagrad: densekit against torch.optim's foreach (and fused) implementations.
- Lion, which torch lacks, against NumPy. These start from zero state at step 1.

Memory-bound, so reported in GB/s: bytes = (3 + 2k) N s for k state arrays (read param, grad
and the state; write param and the state). lr = 1e-3, betas and eps are torch's defaults.
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


class NumpyLion:
    """Lion's update with in-place ufuncs and one scratch vector."""

    def __init__(self, param, grad, m, beta1=0.9, beta2=0.99):
        self.param, self.grad, self.m, self.beta1, self.beta2 = param, grad, m, beta1, beta2
        self.scratch = np.empty_like(param)

    def __call__(self):
        s = self.scratch
        np.multiply(self.m, self.beta1, out=s)
        s += (1 - self.beta1) * self.grad
        np.sign(s, out=s)
        s *= -LR
        self.param += s
        self.m *= self.beta2
        self.m += (1 - self.beta2) * self.grad
        return self.param, self.m


# name -> (densekit kernel call, state names, torch class and its state names, flavours)
RULES = {
    "adam step keras": (
        lambda p, g, s, t, threads: kernels.adam_step(
            p, g, s[0], s[1], step=t, lr=LR, convention="keras", num_threads=threads
        ),
        2,
        "keras",
    ),
    "nadam step": (
        lambda p, g, s, t, threads: kernels.nadam_step(
            p, g, s[0], s[1], step=t, lr=LR, num_threads=threads
        ),
        2,
        ("NAdam", ("exp_avg", "exp_avg_sq"), ("foreach",)),
    ),
    "adamax step": (
        lambda p, g, s, t, threads: kernels.adamax_step(
            p, g, s[0], s[1], step=t, lr=LR, num_threads=threads
        ),
        2,
        ("Adamax", ("exp_avg", "exp_inf"), ("foreach",)),
    ),
    "adagrad step": (
        lambda p, g, s, t, threads: kernels.adagrad_step(p, g, s[0], lr=LR, num_threads=threads),
        1,
        ("Adagrad", ("sum",), ("foreach", "fused")),
    ),
    "lion step": (
        lambda p, g, s, t, threads: kernels.lion_step(p, g, s[0], lr=LR, num_threads=threads),
        1,
        None,
    ),
}


def _keras_adam(param, grad):
    """Keras 3's Adam as its torch backend runs it (torch_adam.py's foreach calls, scalars in
    the parameters' dtype), over one parameter from zero state."""
    torch = peers.torch
    p, g = torch.from_numpy(param), torch.from_numpy(grad)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    step = [0]

    def run():
        step[0] += 1
        t = torch.tensor(float(step[0]), dtype=p.dtype)
        beta_1_power = torch.pow(torch.tensor(BETA1, dtype=p.dtype), t)
        beta_2_power = torch.pow(torch.tensor(BETA2, dtype=p.dtype), t)
        alpha = LR * torch.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        torch._foreach_mul_([m], BETA1)
        torch._foreach_add_([m], [g], alpha=1 - BETA1)
        torch._foreach_mul_([v], BETA2)
        torch._foreach_add_([v], torch._foreach_mul([g], [g]), alpha=1 - BETA2)
        torch._foreach_add_(
            [p],
            torch._foreach_div(
                torch._foreach_mul([m], alpha),
                torch._foreach_add(torch._foreach_sqrt([v]), EPS),
            ),
            alpha=-1,
        )
        return p, m, v

    return run


def _torch_step(cls_name, state_names, param, grad, **flavour):
    """A torch.optim optimizer over one parameter from zero state; returns its step call."""
    torch = peers.torch
    p = torch.nn.Parameter(torch.from_numpy(param))
    p.grad = torch.from_numpy(grad)
    optimizer = getattr(torch.optim, cls_name)([p], lr=LR, **flavour)

    def run():
        optimizer.step()
        return (p, *(optimizer.state[p][name] for name in state_names))

    return run


def rule_case(name: str, size: int, dtype: str, threads: int) -> Case:
    step_call, state_count, torch_rule = RULES[name]
    rng = np.random.default_rng(size + 1)
    param = random_array(rng, (size,), dtype)
    grad = random_array(rng, (size,), dtype)
    p_dk = param.copy()
    state_dk = [np.zeros_like(param) for _ in range(state_count)]
    step = [0]

    def run_densekit():
        step[0] += 1
        step_call(p_dk, grad, state_dk, step[0], threads)
        return (p_dk, *state_dk)

    case_peers, notes = [], []
    if torch_rule is None:
        p_np, m_np = param.copy(), np.zeros_like(param)
        case_peers.append(Impl("numpy", NumpyLion(p_np, grad, m_np)))
    elif torch_rule == "keras" and peers.torch is not None:
        case_peers.append(Impl("keras-torch-foreach", _keras_adam(param.copy(), grad)))
    elif peers.torch is not None:
        cls_name, state_names, flavours = torch_rule
        for flavour in flavours:
            try:
                run = _torch_step(cls_name, state_names, param.copy(), grad, **{flavour: True})
            except (RuntimeError, ValueError, TypeError) as exc:
                notes.append(f"torch {cls_name} {flavour}=True unavailable: {exc}")
            else:
                case_peers.append(Impl(f"torch-{flavour}", run))
    return Case(
        family=FAMILY,
        name=name,
        shape=f"{size // 1_000_000}M",
        dtype=dtype,
        threads=threads,
        work=(3.0 + 2.0 * state_count) * size * np.dtype(dtype).itemsize,
        unit="GB/s",
        work_formula=f"{3 + 2 * state_count}*N*itemsize (read param, grad, state; write both)",
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
    for name in RULES:
        kernel = name.split()[0] + "_step"
        if not hasattr(kernels, kernel) or (
            name.endswith("keras") and "convention" not in (kernels.adam_step.__doc__ or "")
        ):
            yield Skip(FAMILY, name, f"densekit.kernels has no {kernel} of this rule")
            continue
        for dtype in settings.dtypes():
            for size in SIZES:
                yield rule_case(name, size, dtype, settings.threads)


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
