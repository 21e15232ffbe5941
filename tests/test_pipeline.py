"""The input pipeline: Dataset batching, shuffling and map; fit on datasets and iterators;
the prefetch thread (overlap, bounded queue, producer errors, no thread left behind)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from densekit import callbacks
from densekit.data import Dataset

from .asyncutil import (
    TIMEOUT,
    assert_same_state,
    classification,
    densekit_threads,
    fail_on_hang,  # noqa: F401 - autouse fixture
    small_model,
)


def test_batches_shuffle_and_map():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    plain = list(Dataset.from_tensor_slices((x, y)).batch(4))
    assert [len(b[0]) for b in plain] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in plain]), y)
    dropped = Dataset.from_tensor_slices((x, y)).batch(4, drop_remainder=True)
    assert len(dropped) == 2 and len(list(dropped)) == 2
    shuffled = Dataset.from_tensor_slices((x, y)).shuffle(seed=5).batch(3)
    first, again = list(shuffled.iterate(0)), list(shuffled.iterate(0))
    order = np.concatenate([b[1] for b in first])
    assert sorted(order) == list(range(10)) and list(order) != list(range(10))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    next_pass = np.concatenate([b[1] for b in shuffled.iterate(1)])
    assert list(next_pass) != list(order)
    for bx, by in first:
        np.testing.assert_array_equal(bx, x[by])  # rows gathered together
    doubled = list(shuffled.map(lambda bx, by: (bx * 2, by)).iterate(0))
    np.testing.assert_array_equal(doubled[0][0], first[0][0] * 2)


def test_dataset_rejections_name_the_argument():
    x, y = np.ones((4, 2)), np.zeros(4)
    dataset = Dataset.from_tensor_slices((x, y))
    cases = [
        (lambda: Dataset.from_tensor_slices((x, y[:3])), ValueError, "tensors[1]"),
        (lambda: dataset.map(lambda a, b: (a, b)), ValueError, "map"),
        (lambda: dataset.batch(2).shuffle(0), ValueError, "shuffle"),
        (lambda: dataset.batch(0), ValueError, "batch_size"),
        (lambda: dataset.prefetch(-1), ValueError, "buffer_size"),
        (lambda: Dataset.from_batches(5), TypeError, "batches"),
    ]
    for call, error, argument in cases:
        with pytest.raises(error) as info:
            call()
        assert str(info.value).startswith(argument), str(info.value)


def test_fit_on_a_dataset_equals_fit_on_arrays():
    x, y = classification()
    from_arrays, from_dataset, prefetched = small_model(), small_model(), small_model()
    from_arrays.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
    dataset = Dataset.from_tensor_slices((x, y)).batch(64)
    from_dataset.fit(dataset, epochs=2, verbose=0)
    prefetched.fit(dataset.prefetch(3), epochs=2, verbose=0)
    assert_same_state(from_arrays, from_dataset)
    assert_same_state(from_arrays, prefetched)
    assert densekit_threads() == []


def test_shuffled_prefetched_dataset_matches_the_same_pipeline_on_one_thread():
    x, y = classification()
    pipeline = Dataset.from_tensor_slices((x, y)).shuffle(seed=2).batch(32)
    pipeline = pipeline.map(lambda bx, by: (bx + 0.5, by))
    direct, prefetched = small_model(), small_model()
    direct.fit(pipeline, epochs=3, verbose=0)
    history = prefetched.fit(pipeline.prefetch(2), epochs=3, verbose=0)
    assert_same_state(direct, prefetched)
    assert history.epoch == [0, 1, 2]


def test_iterators_with_and_without_steps_per_epoch():
    x, y = classification(n=200)

    def batches():
        for start in range(0, 200, 25):
            yield x[start : start + 25], y[start : start + 25]

    model = small_model()
    history = model.fit(batches(), epochs=1, verbose=0)
    assert model.optimizer.iterations == 8 and history.epoch == [0]
    model.fit(batches(), epochs=2, steps_per_epoch=4, verbose=0)
    assert model.optimizer.iterations == 16
    with pytest.warns(UserWarning, match="ran out of data"):
        history = model.fit(batches(), epochs=3, verbose=0)
    assert history.epoch == [0]
    sized = Dataset.from_batches([(x[:50], y[:50]), (x[50:], y[50:])])
    history = model.fit(sized, epochs=2, steps_per_epoch=3, verbose=0)  # wraps around
    assert history.epoch == [0, 1] and model.optimizer.iterations == 16 + 8 + 6
    with pytest.raises(ValueError, match="no batches"):
        model.fit(Dataset.from_batches([]), verbose=0)


def test_bad_batches_and_arguments_raise():
    x, y = classification(n=64)
    model = small_model()
    with pytest.raises(TypeError, match="each batch"):
        model.fit(iter([x[:8]]), verbose=0)
    with pytest.raises(ValueError, match="batch x"):
        model.fit(iter([(x[:8, :3], y[:8])]), verbose=0)
    dataset = Dataset.from_tensor_slices((x, y)).batch(8)
    for kwargs, argument in (
        ({"y": y}, "y"),
        ({"validation_split": 0.2}, "validation_split"),
        ({"workers": 2, "strategy": "hogwild"}, "strategy"),
    ):
        with pytest.raises(ValueError, match=argument):
            model.fit(dataset, verbose=0, **kwargs)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(x, y, steps_per_epoch=2, verbose=0)
    assert densekit_threads() == []


def test_a_producer_error_surfaces_in_fit_and_no_thread_is_left():
    x, y = classification(n=256)
    calls = []

    def augment(bx, by):
        calls.append(1)
        if len(calls) == 3:
            raise ArithmeticError("bad augmentation")
        return bx, by

    dataset = Dataset.from_tensor_slices((x, y)).batch(32).map(augment).prefetch(2)
    model = small_model()
    with pytest.raises(ArithmeticError, match="bad augmentation"):
        model.fit(dataset, epochs=2, verbose=0)
    assert model.optimizer.iterations == 2 and not model.training
    assert densekit_threads() == []


def test_the_producer_runs_ahead_of_the_kernels_within_the_queue_bound():
    x, y = classification(n=320)
    prepared = []
    second_ready = threading.Event()

    def augment(bx, by):
        prepared.append(1)
        if len(prepared) == 2:
            second_ready.set()
        return bx, by

    class Probe(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ahead = []

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:  # the next batch is prepared while this step has not run yet
                assert second_ready.wait(TIMEOUT)
            self.ahead.append(len(prepared) - batch)

    probe = Probe()
    dataset = Dataset.from_tensor_slices((x, y)).batch(32).map(augment).prefetch(2)
    small_model().fit(dataset, epochs=1, verbose=0, callbacks=[probe])
    # in flight: the batch being trained, the queue (2), one the producer holds
    assert max(probe.ahead) <= 4, probe.ahead
    assert len(prepared) == 10


def test_stopping_a_job_stops_its_producer():
    x, y = classification(n=2000)
    dataset = Dataset.from_tensor_slices((x, y)).shuffle(seed=1).batch(8).prefetch(4)
    model = small_model()
    job = model.fit_async(dataset, epochs=1000, verbose=0)
    while job.step < 3 and not job.done():
        time.sleep(0.002)
    assert job.cancel()
    concurrent.futures.wait([job], timeout=TIMEOUT)
    assert job.cancelled() and densekit_threads() == []
