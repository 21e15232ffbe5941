"""The interpreter exits quietly while a densekit kernel runs in another (daemon) thread.

CPython ends a thread that takes the GIL during finalization with pthread_exit; a kernel call
that released the GIL must then not try to take it back from a destructor (the process would
abort with "terminate called without an active exception"). Each case runs in a fresh
interpreter whose main thread ends while a daemon thread is inside kernel calls.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SETUP = """
import sys, threading, time
import numpy as np
import densekit
from densekit import kernels, layers

x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int64)

def model():
    m = densekit.Sequential([
        layers.Input((64,)),
        layers.Dense(256, activation="gelu"),
        layers.Dense(2, activation="softmax"),
    ])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m
"""

WORK = {
    "kernel": (
        "w = np.ones((64, 512), np.float32)\n"
        "def work():\n"
        "    while True:\n"
        "        kernels.dense_forward(x, w, None, 'gelu')\n"
    ),
    "predict": ("m = model()\ndef work():\n    while True:\n        m.predict(x, verbose=0)\n"),
    "fit": ("m = model()\ndef work():\n    m.fit(x, y, epochs=10**6, batch_size=32, verbose=0)\n"),
}

MAIN = """
thread = threading.Thread(target=work, daemon=True)
thread.start()
time.sleep(0.3)
assert thread.is_alive()
print("main thread done", flush=True)
"""


@pytest.mark.parametrize("work", sorted(WORK))
@pytest.mark.parametrize("repeat", range(3))
def test_exit_while_a_daemon_thread_runs_kernels(work, repeat):
    code = SETUP + WORK[work] + MAIN
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "main thread done\n"
    assert "terminate" not in done.stderr and done.stderr == ""
