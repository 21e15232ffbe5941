"""Data-parallel training over MPI (densekit.distributed): runs of tests/mpi_scripts under
``mpiexec -n 1, 2, 4, 8`` (4 and 8 oversubscribed, one thread each) compared with each other
and with single-process training; faults; the import contract; Dataset.shard."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import densekit

SCRIPTS = Path(__file__).parent / "mpi_scripts"
PACKAGE_ROOT = Path(densekit.__file__).resolve().parent.parent
HAS_MPI4PY = importlib.util.find_spec("mpi4py") is not None


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    not HAS_MPI4PY or MPIEXEC is None,
    reason="needs mpi4py and mpiexec: pip install 'densekit[mpi]'",
)


def _environment(threads: int | None) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    paths = [str(PACKAGE_ROOT), str(SCRIPTS), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def launch(processes: int, *arguments: str, threads=None, timeout=90, check=True):
    """``mpiexec -n processes python -m mpi4py arguments...`` in tests/mpi_scripts."""
    command = [MPIEXEC, "-n", str(processes), sys.executable, "-m", "mpi4py", *arguments]
    result = subprocess.run(
        command,
        cwd=SCRIPTS,
        env=_environment(threads),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


class Run:
    """What each rank of one train.py run wrote."""

    def __init__(self, out: Path, result):
        self.out, self.stdout = out, result.stdout
        self.facts = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
        self.arrays = [dict(np.load(p)) for p in sorted(out.glob("rank*.npz"))]
        self.size = self.facts[0]["size"]
        assert len(self.facts) == len(self.arrays) == self.size

    @property
    def weights(self) -> np.ndarray:
        return self.arrays[0]["weights"]


def train(tmp_path_factory, processes: int, *options: str, threads=None) -> Run:
    out = tmp_path_factory.mktemp(f"n{processes}")
    result = launch(processes, "train.py", "--out", str(out), *options, threads=threads)
    return Run(out, result)


@pytest.fixture(scope="module")
def deterministic_runs(tmp_path_factory):
    return {
        1: train(tmp_path_factory, 1, "--deterministic"),
        2: train(tmp_path_factory, 2, "--deterministic"),
        4: train(tmp_path_factory, 4, "--deterministic", threads=1),
        8: train(tmp_path_factory, 8, "--deterministic", threads=1),
    }


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    # the second run sets OMP_NUM_THREADS=2: an explicit count wins over the node's share
    return [train(tmp_path_factory, 2), train(tmp_path_factory, 2, threads=2)]


def assert_same_on_every_rank(run: Run) -> None:
    assert [f["root_prediction"] for f in run.facts] == [True] + [None] * (run.size - 1)
    for facts, arrays in zip(run.facts, run.arrays):
        assert facts["history"] == run.facts[0]["history"]
        assert facts["evaluation"] == run.facts[0]["evaluation"]
        np.testing.assert_array_equal(arrays["weights"], run.weights)
        np.testing.assert_array_equal(arrays["predictions"], run.arrays[0]["predictions"])


@needs_mpi
def test_deterministic_mode_gives_the_same_bits_on_1_2_4_and_8_processes(deterministic_runs):
    reference = deterministic_runs[1]
    for run in deterministic_runs.values():
        assert_same_on_every_rank(run)
        assert run.facts[0]["history"] == reference.facts[0]["history"]
        assert run.facts[0]["evaluation"] == reference.facts[0]["evaluation"]
        np.testing.assert_array_equal(run.weights, reference.weights)
        np.testing.assert_array_equal(
            run.arrays[0]["predictions"], reference.arrays[0]["predictions"]
        )
    losses = reference.facts[0]["history"]["loss"]
    assert losses[-1] < losses[0]


@needs_mpi
def test_default_mode_matches_single_process_training_and_repeats_bitwise(default_runs):
    sys.path.insert(0, str(SCRIPTS))
    try:
        import train as script
    finally:
        sys.path.remove(str(SCRIPTS))
    x, y, x_val, y_val = script.dataset()
    model = script.build_model()
    history = model.fit(
        x,
        y,
        sample_weight=script.sample_weights(),
        batch_size=32,
        epochs=4,
        seed=5,
        verbose=0,
        validation_data=(x_val, y_val),
    )
    first, second = default_runs
    for run in default_runs:
        assert_same_on_every_rank(run)
    np.testing.assert_array_equal(first.weights, second.weights)
    assert first.facts[0]["history"] == second.facts[0]["history"]
    single = np.concatenate([w.ravel() for w in model.get_weights()])
    np.testing.assert_allclose(first.weights, single, rtol=1e-4, atol=1e-5)
    for key, values in history.history.items():
        np.testing.assert_allclose(first.facts[0]["history"][key], values, rtol=1e-5)


@needs_mpi
def test_threads_per_process_are_the_node_share_unless_set(deterministic_runs, default_runs):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert all(f["threads"] == max(1, cores // 2) for f in deterministic_runs[2].facts)
    assert all(f["threads"] == 1 for f in deterministic_runs[4].facts)  # OMP_NUM_THREADS=1
    assert all(f["threads"] == 2 for f in default_runs[1].facts)  # OMP_NUM_THREADS=2


@needs_mpi
def test_files_and_progress_come_from_rank_0_only(deterministic_runs):
    for run in (deterministic_runs[2], deterministic_runs[4]):
        written = sorted(p.name for p in (run.out / "files0").iterdir())
        checkpoints = [f"ckpt-{epoch}.npz" for epoch in range(1, 5)]
        assert written == [*checkpoints, "final.npz", "log.csv"]
        for rank in range(1, run.size):
            assert list((run.out / f"files{rank}").iterdir()) == []
        assert run.stdout.count("Epoch 1/4") == 1
        with open(run.out / "files0" / "log.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [float(r["loss"]) for r in rows] == run.facts[0]["history"]["loss"]
        saved = densekit.load_model(run.out / "files0" / "final.npz")
        np.testing.assert_array_equal(
            np.concatenate([w.ravel() for w in saved.get_weights()]), run.weights
        )


@needs_mpi
@pytest.mark.parametrize("processes", [1, 2])
def test_a_4_process_checkpoint_resumes_on_fewer_processes(
    deterministic_runs, tmp_path_factory, processes
):
    four = deterministic_runs[4]
    checkpoint = four.out / "files0" / "ckpt-2.npz"
    resumed = train(
        tmp_path_factory,
        processes,
        "--deterministic",
        "--resume-from",
        str(checkpoint),
        "--initial-epoch",
        "2",
    )
    assert_same_on_every_rank(resumed)
    np.testing.assert_array_equal(resumed.weights, four.weights)
    assert resumed.facts[0]["history"]["loss"] == four.facts[0]["history"]["loss"][2:]


@needs_mpi
def test_fit_async_under_mpi_trains_as_fit_does(deterministic_runs, tmp_path_factory):
    # rank 1 builds its model with other weights: fit broadcasts rank 0's first
    run = train(tmp_path_factory, 2, "--deterministic", "--fit-async", "--other-weights")
    assert_same_on_every_rank(run)
    np.testing.assert_array_equal(run.weights, deterministic_runs[2].weights)
    assert run.facts[0]["history"] == deterministic_runs[2].facts[0]["history"]


@needs_mpi
def test_frozen_layers_train_the_same_bits_on_1_and_2_processes(tmp_path_factory):
    runs = [train(tmp_path_factory, n, "--deterministic", "--frozen") for n in (1, 2)]
    for run in runs:
        assert_same_on_every_rank(run)
    np.testing.assert_array_equal(runs[0].weights, runs[1].weights)
    sys.path.insert(0, str(SCRIPTS))
    try:
        import train as script
    finally:
        sys.path.remove(str(SCRIPTS))
    initial = script.build_model(frozen=True)
    sizes = [w.size for w in initial.get_weights()]
    start = sizes[0] + sizes[1]  # the middle layer's kernel and bias, in Keras's order
    frozen = np.concatenate([w.ravel() for w in initial.get_weights()[2:4]])
    np.testing.assert_array_equal(runs[1].weights[start : start + frozen.size], frozen)
    first = np.concatenate([w.ravel() for w in initial.get_weights()[:2]])
    assert not np.array_equal(runs[1].weights[:start], first)  # the first layer trained


@needs_mpi
def test_sharded_datasets_train_the_same_model_on_every_rank(tmp_path_factory):
    run = train(tmp_path_factory, 2, "--dataset")
    assert_same_on_every_rank(run)
    losses = run.facts[0]["history"]["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@needs_mpi
def test_wrong_inputs_raise_the_same_error_on_every_rank_before_training():
    lines = launch(2, "faults.py", "checks").stdout.splitlines()
    expected = {
        "lengths": "rank 1 has shape (199, 12)",
        "batch": "the global batch (1) is smaller than the number of processes (2)",
        "config": "rank 1 has model.layers[1].config",
        "dataset": "needs the same arrays x, y on every rank",
    }
    for rank in (0, 1):
        for case, fragment in expected.items():
            [line] = [line for line in lines if line.startswith(f"rank {rank} {case}:")]
            assert "ValueError" in line and fragment in line, line


@needs_mpi
def test_a_rank_that_raises_ends_every_rank_with_an_error():
    result = launch(2, "faults.py", "raise", timeout=30, check=False)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr


@needs_mpi
def test_fit_async_needs_mpi_thread_multiple_and_fit_runs_without_it():
    result = launch(2, "faults.py", "serialized")
    lines = result.stdout.splitlines()
    for rank in (0, 1):
        [line] = [line for line in lines if line.startswith(f"rank {rank} serialized:")]
        assert "RuntimeError" in line and "MPI_THREAD_MULTIPLE" in line, line
        assert f"rank {rank} fit without overlap: trained" in lines


@needs_mpi
def test_a_stop_asked_on_one_rank_stops_every_rank_after_the_same_step():
    result = launch(2, "faults.py", "stop")
    assert "epochs 1 steps 3 same on every rank: True" in result.stdout


@needs_mpi
def test_mpi4py_releases_the_gil_inside_mpi_calls():
    # rank 1 sends only after rank 0's main thread has run 1000 iterations while its other
    # thread waits in MPI_Recv: with the GIL held there, the job would hang (timeout)
    result = launch(2, "faults.py", "gil", timeout=30)
    assert "while a thread waited in MPI_Recv: " in result.stdout


@needs_mpi
def test_a_rank_killed_with_sigkill_ends_the_job():
    result = launch(2, "faults.py", "kill", timeout=30, check=False)
    assert result.returncode != 0


@needs_mpi
def test_the_demo_trains_on_2_processes_and_reports_once():
    command = ["-m", "densekit.demo", "--epochs", "2", "--verbose", "2"]
    result = launch(2, *command)
    assert result.stdout.count("test accuracy:") == 1
    assert "2 processes x 1 threads" in result.stdout


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=_environment(None),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_importing_densekit_does_not_import_mpi4py():
    code = "import sys, densekit, densekit.distributed; print('mpi4py' in sys.modules)"
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_missing_mpi4py_names_the_extra_to_install():
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "import densekit, densekit.distributed\n"
        "try:\n    densekit.distributed.MPIStrategy()\n"
        "except ImportError as error:\n    print(error)\n"
        "model = densekit.Sequential([densekit.layers.Dense(2)])\n"
        "model.compile('sgd', 'mse')\n"
        "try:\n    model.fit([[0.0]], [[0.0, 0.0]], strategy='mpi', verbose=0)\n"
        "except ImportError as error:\n    print(error)\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all("pip install 'densekit[mpi]'" in line for line in lines)


def test_fit_refuses_an_unknown_strategy():
    model = densekit.Sequential([densekit.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"'mpi' or a densekit\.distributed\.MPIStrategy"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), strategy="horovod", verbose=0)


def test_dataset_shard_takes_every_kth_row_or_batch():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    data = densekit.data.Dataset.from_tensor_slices((x, y))
    shards = [data.shard(3, i) for i in range(3)]
    rows = [np.concatenate([b[1] for b in s.batch(2)]) for s in shards]
    assert [r.tolist() for r in rows] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    batches = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 10, 2)]
    sharded = densekit.data.Dataset.from_batches(batches).shard(2, 1)
    assert len(sharded) == 2
    assert [b[1].tolist() for b in sharded] == [[2, 3], [6, 7]]
    with pytest.raises(ValueError, match="before shuffle"):
        data.shuffle(seed=0).shard(2, 0)
    with pytest.raises(ValueError, match="index"):
        data.shard(2, 2)
    with pytest.raises(TypeError, match="num_shards"):
        data.shard(2.0, 0)
