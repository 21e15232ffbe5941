"""Background training and inference: fit_async futures and asyncio, cancel/stop consistency,
predict during training, the training claim, the OpenMP wait policy and fork safety.
Every wait has a timeout, and a hang guard ends a stuck run (asyncutil.fail_on_hang)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import densekit
from densekit import callbacks, layers, losses
from densekit._openmp_env import SPIN_COUNT

from .asyncutil import (
    TIMEOUT,
    assert_same_state,
    classification,
    densekit_threads,
    fail_on_hang,  # noqa: F401 - autouse fixture
    small_model,
)


class Gate(callbacks.Callback):
    """Holds the training thread at the end of epoch ``at`` until the test opens it."""

    def __init__(self, at=0):
        super().__init__()
        self.at, self.reached, self.opened = at, threading.Event(), threading.Event()

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            self.reached.set()
            assert self.opened.wait(TIMEOUT)


class StopAfterSteps(callbacks.Callback):
    def __init__(self, steps):
        super().__init__()
        self.steps, self.done = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.steps:
            self.model.stop_training = True


def test_fit_async_is_a_future_of_the_same_history_as_fit():
    x, y = classification()
    background, foreground = small_model(), small_model()
    job = background.fit_async(x, y, batch_size=50, epochs=3, seed=4, verbose=0)
    assert isinstance(job, concurrent.futures.Future)
    history = job.result(timeout=TIMEOUT)
    expected = foreground.fit(x, y, batch_size=50, epochs=3, seed=4, verbose=0)
    assert history.history == expected.history and history.epoch == [0, 1, 2]
    assert_same_state(background, foreground)
    assert job.done() and not job.cancelled() and not background.training
    assert densekit_threads() == []


def test_errors_propagate_and_release_the_model():
    x, y = classification()
    model = small_model()

    class Boom(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyError("boom in a callback")

    job = model.fit_async(x, y, epochs=2, verbose=0, callbacks=[Boom()])
    assert isinstance(job.exception(timeout=TIMEOUT), KeyError)
    with pytest.raises(KeyError, match="boom"):
        job.result()
    model.fit(x, y, epochs=1, verbose=0)  # the model is free again
    with pytest.raises(ValueError, match="batch_size"):  # bad arguments raise at once
        model.fit_async(x, y, batch_size=0)
    assert not model.training


def test_a_second_fit_and_changes_from_other_threads_are_refused():
    x, y = classification()
    model = small_model()
    gate = Gate()
    job = model.fit_async(x, y, epochs=2, verbose=0, callbacks=[gate])
    try:
        assert gate.reached.wait(TIMEOUT)
        assert model.training
        for call in (
            lambda: model.fit(x, y, verbose=0),
            lambda: model.fit_async(x, y, verbose=0),
            lambda: model.train_on_batch(x[:8], y[:8]),
            lambda: model.compile("sgd", "mse"),
            lambda: model.evaluate(x, y, verbose=0),
            lambda: model.set_weights(model.get_weights()),
            lambda: model.save_weights("unused.weights.npz"),
        ):
            with pytest.raises(RuntimeError, match="training"):
                call()
        predictions = model.predict(x[:10])  # reading is fine
        assert predictions.shape == (10, 4)
    finally:
        gate.opened.set()
    job.result(timeout=TIMEOUT)


def test_progress_history_and_epoch_logs_are_live():
    x, y = classification()
    model = small_model()
    gate = Gate(at=1)
    job = model.fit_async(x, y, batch_size=100, epochs=3, verbose=0, callbacks=[gate])
    assert gate.reached.wait(TIMEOUT)
    assert job.progress == (1, 6, 6, 3) and (job.epoch, job.step) == (1, 6)
    assert job.history.epoch == [0] and len(job.history.history["loss"]) == 1
    assert "running" in repr(job)
    gate.opened.set()
    history = job.result(timeout=TIMEOUT)
    assert job.history.history == history.history


def test_await_does_not_block_the_event_loop_and_epoch_logs_stream():
    x, y = classification(n=2000)
    model = small_model()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        counting = asyncio.create_task(ticker())
        job = model.fit_async(x, y, batch_size=16, epochs=20, verbose=0)
        epochs = [epoch async for epoch, _ in job]
        history = await asyncio.wait_for(job, TIMEOUT)
        outputs = await model.predict_async(x[:7])
        counting.cancel()
        return epochs, history, outputs, ticks

    epochs, history, outputs, ticks = asyncio.run(main())
    assert epochs == list(range(20)) and history.epoch == list(range(20))
    np.testing.assert_array_equal(outputs, model.predict(x[:7]))
    assert ticks >= 5  # the loop ran while the model trained


@pytest.mark.parametrize("how", ["cancel", "stop"])
def test_cancel_and_stop_leave_the_state_of_a_whole_step(how):
    x, y = classification(n=800)
    model = small_model()
    job = model.fit_async(x, y, batch_size=8, epochs=200, seed=3, verbose=0)
    deadline = time.monotonic() + TIMEOUT
    while job.step < 5 and job.epoch in (None, 0) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert getattr(job, how)()
    concurrent.futures.wait([job], timeout=TIMEOUT)
    if how == "cancel":
        assert job.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            job.result()
    else:
        assert not job.cancelled() and job.result().epoch is not None
    steps = model.optimizer.iterations
    assert 0 < steps < 200 * 100
    replay = small_model()
    replay.fit(x, y, batch_size=8, epochs=200, seed=3, verbose=0, callbacks=[StopAfterSteps(steps)])
    assert_same_state(model, replay)
    assert not job.cancel() and not job.stop()  # a finished job cannot be stopped again


def test_cancelling_the_awaiting_task_cancels_the_job():
    x, y = classification(n=800)
    model = small_model()

    async def main():
        job = model.fit_async(x, y, batch_size=8, epochs=500, verbose=0)
        task = asyncio.ensure_future(job)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return job

    job = asyncio.run(main())
    concurrent.futures.wait([job], timeout=TIMEOUT)
    assert job.cancelled() and not model.training


def test_cancelling_the_task_awaiting_a_detached_job_leaves_it_training():
    x, y = classification(n=800)
    model = small_model()

    async def main():
        job = model.fit_async(x, y, batch_size=8, epochs=500, verbose=0, detached=True)
        task = asyncio.ensure_future(job)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return job

    job = asyncio.run(main())
    assert job.detached and not job.cancel_requested and not job.done()
    assert job.stop()
    assert job.result(timeout=TIMEOUT).epoch is not None and not job.cancelled()
    with pytest.raises(TypeError, match="detached"):
        model.fit_async(x, y, detached="yes")


def test_predict_during_training_sees_the_weights_of_a_whole_step():
    x, y = classification(n=400)
    probe = x[:64]
    model = small_model(hidden=64)

    class Record(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.states = [model.get_weights()]

        def on_train_batch_end(self, batch, logs=None):
            self.states.append(self.model.get_weights())

    record = Record()
    job = model.fit_async(x, y, batch_size=20, epochs=200, verbose=0, callbacks=[record])
    seen = []
    while not job.done() and len(seen) < 60:
        seen.append(model.predict(probe, batch_size=64))
        seen.append(model.get_weights())
    job.stop()
    job.result(timeout=TIMEOUT)
    reference = small_model(hidden=64)
    valid_outputs, valid_weights = set(), set()
    for state in record.states:
        reference.set_weights(state)
        valid_outputs.add(reference.predict(probe, batch_size=64).tobytes())
        valid_weights.add(b"".join(w.tobytes() for w in state))
    assert len(seen) >= 2
    for item in seen:
        if isinstance(item, np.ndarray):
            assert item.tobytes() in valid_outputs
        else:
            assert b"".join(w.tobytes() for w in item) in valid_weights


def test_predict_from_many_threads_at_once_is_correct():
    x, _ = classification(n=300)
    model = small_model(hidden=48)
    expected = {rows: model.predict(x[:rows], batch_size=32) for rows in (1, 32, 77, 300)}

    def work(seed):
        rows = [1, 32, 77, 300][seed % 4]
        for _ in range(30):
            if not np.array_equal(model.predict(x[:rows], batch_size=32), expected[rows]):
                return False
        return True

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert all(pool.map(work, range(12), timeout=TIMEOUT))
    futures = [model.predict_async(x[:rows], batch_size=32) for rows in expected]
    for future, rows in zip(futures, expected):
        np.testing.assert_array_equal(future.result(timeout=TIMEOUT), expected[rows])


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
    }
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(
    not densekit.build_info()["openmp"], reason="a build without OpenMP (DENSEKIT_OPENMP=OFF)"
)
def test_openmp_workers_spin_briefly_unless_the_user_chose():
    code = (
        "import os, densekit, densekit._openmp_env as e\n"
        "print(e.status, os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    ours = run_python(code, {"OMP_DISPLAY_ENV": "VERBOSE"})
    assert ours.returncode == 0, ours.stderr
    assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" in ours.stderr  # what libgomp read at its load
    assert ours.stdout.split() == [f"GOMP_SPINCOUNT={SPIN_COUNT}", "None"]  # env restored
    theirs = run_python(code, {"OMP_DISPLAY_ENV": "VERBOSE", "OMP_WAIT_POLICY": "ACTIVE"})
    assert theirs.returncode == 0 and "GOMP_SPINCOUNT = '30000000000'" in theirs.stderr


def _child_trains(queue, inherited):
    x, y = classification(n=200)
    model = small_model()
    model.fit(x, y, epochs=1, verbose=0)
    inherited.fit(x, y, epochs=1, verbose=0)  # its parent's job thread is not in the child
    queue.put((model.predict(x[:3]).shape, inherited.predict(x[:3]).shape))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_child_forked_during_background_training_trains_and_predicts():
    x, y = classification(n=2000)
    model = small_model()
    job = model.fit_async(x, y, batch_size=8, epochs=100, verbose=0)
    try:
        time.sleep(0.05)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child_trains, args=(queue, model))
        child.start()
        child.join(timeout=TIMEOUT)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung")
        assert child.exitcode == 0 and queue.get(timeout=5) == ((3, 4), (3, 4))
    finally:
        job.stop()
    job.result(timeout=TIMEOUT)


def test_a_job_is_running_until_it_ends_and_notifies_waiters_and_callbacks_when_cancelled():
    x, y = classification(n=800)
    model = small_model()
    gate = Gate()
    called = []
    job = model.fit_async(x, y, batch_size=8, epochs=50, verbose=0, callbacks=[gate])
    job.add_done_callback(lambda future: called.append(future.cancelled()))
    waiter = concurrent.futures.ThreadPoolExecutor(1)
    try:
        waiting = waiter.submit(
            concurrent.futures.wait, [job], TIMEOUT, concurrent.futures.FIRST_COMPLETED
        )
        assert gate.reached.wait(TIMEOUT)
        assert job.running() and not job.done() and not called
        assert job.cancel()
        gate.opened.set()
        done, _ = waiting.result(timeout=TIMEOUT)
    finally:
        gate.opened.set()
        waiter.shutdown()
    assert done == {job} and job.cancelled() and not job.running()
    assert called == [True]
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(timeout=TIMEOUT)


# -- a model without an Input is built once, by whichever thread comes first ------------------
def lazy_model(seed=0, compiled=True):
    """A model without an Input: built by its first fit, evaluate or predict."""
    densekit.set_random_seed(seed)
    model = densekit.Sequential([layers.Dense(256, "relu"), layers.Dense(4)])
    if compiled:
        model.compile(
            "adam", losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
        )
    return model


@pytest.fixture
def frequent_switches():
    """Switch threads every microsecond, so that unsynchronised code interleaves."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def race(*calls):
    """Run the calls on threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    results, errors = [None] * len(calls), []

    def run(i):
        barrier.wait(TIMEOUT)
        try:
            results[i] = calls[i]()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors, errors
    return results


def test_concurrent_first_predicts_build_one_model(frequent_switches):
    x, _ = classification(n=64)
    expected = lazy_model(compiled=False).predict(x)
    for _ in range(20):
        model = lazy_model(compiled=False)
        first, second = race(
            lambda model=model: model.predict(x), lambda model=model: model.predict(x)
        )
        np.testing.assert_array_equal(first, expected)
        np.testing.assert_array_equal(second, expected)
        np.testing.assert_array_equal(model.predict(x), expected)


def test_a_fit_racing_a_first_predict_trains_the_model(frequent_switches):
    x, y = classification(n=256)
    arguments = {"epochs": 2, "batch_size": 32, "seed": 0, "verbose": 0}
    reference = lazy_model()
    reference.fit(x, y, **arguments)
    for _ in range(20):
        model = lazy_model()
        history, _ = race(
            lambda model=model: model.fit(x, y, **arguments),
            lambda model=model: model.predict(x[:8]),
        )
        assert_same_state(model, reference)
        assert history.history["loss"] == reference.history.history["loss"]


# -- Ctrl-C while waiting for a job ------------------------------------------------------------
INTERRUPTED_WAIT = """
import concurrent.futures, sys, threading, time
import numpy as np
import densekit
from densekit import callbacks, layers, losses

class SlowStep(callbacks.Callback):
    def __init__(self, work):
        super().__init__()
        self.work = work
    def on_train_batch_end(self, batch, logs=None):
        if self.work == "sleep":
            time.sleep(0.5)
        elif self.work == "kernels":
            w = np.ones((64, 256), np.float32)
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                densekit.kernels.dense_forward(x, w, None, "gelu")

x = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int64)
model = densekit.Sequential([layers.Input((64,)), layers.Dense(32, "relu"), layers.Dense(2)])
model.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True))
work, catch, detached = sys.argv[1], sys.argv[2] == "catch", sys.argv[3] == "detached"
options = {"detached": True} if detached else {}
job = model.fit_async(
    x, y, epochs=10**6, batch_size=8, verbose=0, callbacks=[SlowStep(work)], **options
)
while job.step < 2 and job.epoch in (None, 0):
    time.sleep(0.001)

def announce_the_wait():  # once the main thread waits inside job.result()
    main = threading.main_thread().ident
    while True:
        frame, names = sys._current_frames().get(main), []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        if names[:2] == ["wait", "result"] or names[:3] == ["wait", "wait", "result"]:
            break
        time.sleep(0.005)
    print("waiting", flush=True)

threading.Thread(target=announce_the_wait, daemon=True).start()
if not catch:
    job.result(timeout=120)
try:
    job.result(timeout=120)
except KeyboardInterrupt:
    print("interrupted", job.cancel_requested, flush=True)
done, _ = concurrent.futures.wait([job], timeout=0.5 if detached else 60)
print("cancelled" if job.cancelled() else "done" if done else "training", flush=True)
job.stop()
concurrent.futures.wait([job], timeout=60)
print("steps", model.optimizer.iterations > 0, flush=True)
"""


def interrupt_child(work: str, catch: bool, detached: bool, interrupts: int):
    """Run INTERRUPTED_WAIT, send SIGINT ``interrupts`` times once it waits for the job (the
    second after the first's traceback); its returncode, stdout and stderr."""
    arguments = [work, "catch" if catch else "raise", "detached" if detached else "attached"]
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_WAIT, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(TIMEOUT, child.kill)  # ends a hung child, whatever blocks
    watchdog.start()
    try:
        assert child.stdout.readline() == "waiting\n"  # inside job.result()
        child.send_signal(signal.SIGINT)
        if interrupts == 2:
            assert child.stderr.readline().startswith("Traceback")  # the first one's
            time.sleep(0.1)  # the interpreter is shutting down, waiting for the job
            child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=TIMEOUT)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.communicate()
    return child.returncode, stdout, stderr


@pytest.mark.parametrize("detached", [False, True], ids=["attached", "detached"])
def test_ctrl_c_in_result_stops_the_job_unless_detached(detached):
    returncode, stdout, stderr = interrupt_child("none", True, detached, 1)
    assert returncode == 0, stderr
    expected = "interrupted False\ntraining\n" if detached else "interrupted True\ncancelled\n"
    assert stdout == expected + "steps True\n"


@pytest.mark.parametrize("work", ["none", "kernels"])
def test_ctrl_c_ends_a_script_waiting_for_its_job(work):
    # one Ctrl-C: the KeyboardInterrupt ends the script, and the job stops at its next step
    # instead of keeping the interpreter alive
    returncode, _, stderr = interrupt_child(work, False, False, 1)
    assert returncode == -signal.SIGINT, stderr
    assert stderr.rstrip().endswith("KeyboardInterrupt")


@pytest.mark.parametrize(
    ("work", "detached"), [("sleep", False), ("kernels", False), ("kernels", True)]
)
def test_a_second_ctrl_c_during_shutdown_ends_quietly(work, detached):
    # the second Ctrl-C interrupts the interpreter's wait for the job's thread at exit: the
    # process exits, without an abort, while the job thread sleeps or runs kernels
    returncode, _, stderr = interrupt_child(work, False, detached, 2)
    assert returncode == -signal.SIGINT, stderr
    assert "terminate called" not in stderr and "Fatal Python error" not in stderr
