"""The binding layer under random calls (tools/fuzz_bindings.py), and the fuzzer's findings.

The fuzzer runs in a child process with an address-space limit: a crash there fails the test
with the child's output, and no allocation it provokes can exhaust the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from densekit import kernels

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("DENSEKIT_FUZZ_EXAMPLES", "600"))


def test_random_calls_return_or_raise_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-m", "tools.fuzz_bindings", "--examples", str(EXAMPLES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-4000:], done.stderr[-8000:])
    assert "no failure" in done.stdout


def test_chain_through_zero_width_layers_of_huge_extent_raises_memory_error():
    # Found by the fuzzer: the (2**33, 2**32) intermediate's size wrapped to 0 (a segfault).
    w0 = np.zeros((0, 2**32), np.float32)
    w1 = np.zeros((2**32, 0), np.float32)
    chain = kernels.DenseChain([(w0, None, "linear"), (w1, None, "linear")])
    with pytest.raises(MemoryError):
        chain(np.zeros((2**33, 0), np.float32), num_threads=3)


@pytest.mark.parametrize("value", [2**63, 2**64, 2**200])
def test_huge_thread_counts_are_capped(value):
    x = np.ones((2, 3), np.float32)
    w = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(kernels.dense_forward(x, w, num_threads=value), x @ w)


@pytest.mark.parametrize("value", [-(2**64), -(2**63) - 1, 0, -1])
def test_negative_thread_counts_name_the_argument(value):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=f"num_threads: expected an int >= 1 or None, got {value}"):
        kernels.dense_forward(x, np.ones((3, 4), np.float32), num_threads=value)


@pytest.mark.parametrize("activation", [None, "linear", "relu", "sigmoid", "softmax"])
def test_chain_refuses_an_alpha_for_an_activation_without_one(activation):
    w = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="takes no alpha"):
        kernels.DenseChain([(w, None, activation, 0.5)])
