"""Input pipelines for ``fit``: a ``Dataset`` of (x, y[, sample_weight]) batches, and the
background thread that prepares batches while the kernels compute (``prefetch``).

A Dataset is a recipe, immutable like tf.data's: ``Dataset.from_tensor_slices((x, y))
.shuffle(seed=0).batch(64).map(augment).prefetch(2)``. The rows of a shuffled batch are
gathered with the ``take_rows`` kernel (without the GIL); ``map`` runs a Python function on
each batch; ``prefetch(k)`` runs all of that on one background thread, at most k batches
ahead, handing batches over through a bounded queue. An exception in the producer is raised
by ``fit`` (with its traceback); when fit ends, however it ends, the producer is stopped
and joined, so no thread is left behind. Any iterable of batches (a list, a generator) can
be a Dataset too: ``Dataset.from_batches(generator)``; ``fit`` prefetches a plain iterable
two batches ahead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from . import kernels

# Markers on the producer's stream: one pass over the data ended; the data ran out.
END_OF_PASS = object()
EXHAUSTED = object()


class Dataset:
    """Batches of (x, y) or (x, y, sample_weight) arrays for ``fit``; build one with
    ``from_tensor_slices`` or ``from_batches``."""

    def __init__(self, arrays=None, batches=None):
        self._arrays: tuple[np.ndarray, ...] | None = arrays
        self._batches = batches
        self._seed: int | None = None
        self._reshuffle = True
        self._batch_size: int | None = None
        self._drop_remainder = False
        self._maps: tuple[Callable, ...] = ()
        self._prefetch = 0

    # -- constructors --------------------------------------------------------------------
    @classmethod
    def from_tensor_slices(cls, tensors) -> Dataset:
        """Rows of ``x``, ``(x, y)`` or ``(x, y, sample_weight)``: arrays with the same
        number of rows (made C-contiguous once, here)."""
        if isinstance(tensors, (tuple, list)):
            arrays = tuple(np.ascontiguousarray(t) for t in tensors)
        else:
            arrays = (np.ascontiguousarray(tensors),)
        if not 1 <= len(arrays) <= 3:
            raise ValueError(
                f"tensors: expected x, (x, y) or (x, y, sample_weight), got {len(arrays)} arrays"
            )
        for i, array in enumerate(arrays):
            if array.ndim < 1:
                raise ValueError(f"tensors[{i}]: expected at least one axis, got a scalar")
            if array.dtype.kind == "O":
                raise TypeError(f"tensors[{i}]: object arrays are not supported")
            if array.shape[0] != arrays[0].shape[0]:
                raise ValueError(
                    f"tensors[{i}]: expected {arrays[0].shape[0]} rows (as tensors[0]), "
                    f"got {array.shape[0]}"
                )
        return cls(arrays=arrays)

    @classmethod
    def from_batches(cls, batches: Iterable) -> Dataset:
        """Ready-made batches: any iterable of (x, y) or (x, y, sample_weight) tuples. A
        re-iterable one (a list, a Dataset) starts again each epoch; a one-shot iterator (a
        generator) is read on across epochs (give ``fit`` a ``steps_per_epoch``)."""
        if not isinstance(batches, Iterable):
            raise TypeError(f"batches: expected an iterable of batches, got {batches!r}")
        return cls(batches=batches)

    def _copy(self, **changes) -> Dataset:
        other = Dataset.__new__(Dataset)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        return other

    # -- transformations -----------------------------------------------------------------
    def shuffle(self, seed=None, reshuffle_each_iteration=True) -> Dataset:
        """Visit the rows in a random order: a permutation drawn from ``(seed, pass)`` for
        each pass over the data (the same one every pass if ``reshuffle_each_iteration`` is
        False). The whole dataset is shuffled, as tf.data does with a full buffer."""
        if self._arrays is None:
            raise ValueError("shuffle: only a Dataset made by from_tensor_slices shuffles rows")
        if self._batch_size is not None:
            raise ValueError("shuffle: call shuffle() before batch() (it permutes rows)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed: expected an int >= 0 or None, got {seed!r}")
        if seed is None:
            from . import _random

            seed = _random.draw_seed()
        return self._copy(_seed=seed, _reshuffle=bool(reshuffle_each_iteration))

    def shard(self, num_shards, index) -> Dataset:
        """Keep every ``num_shards``-th element starting at ``index`` (as tf.data's
        ``shard``): rows ``index, index + num_shards, ...`` of a ``from_tensor_slices``
        dataset (call it before ``shuffle`` and ``batch``), or those batches of a
        ``from_batches`` one. Each process of a data-parallel fit takes its own shard:
        ``dataset.shard(comm.size, comm.rank)``.

        Parameters
        ----------
        num_shards : int
            The number of shards (>= 1).
        index : int
            This shard, in ``[0, num_shards)``.

        Returns
        -------
        Dataset
            The shard.
        """
        for value, name in ((num_shards, "num_shards"), (index, "index")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name}: expected an int, got {value!r}")
        if num_shards < 1:
            raise ValueError(f"num_shards: expected an int >= 1, got {num_shards!r}")
        if not 0 <= index < num_shards:
            raise ValueError(f"index: expected an int in [0, {num_shards}), got {index!r}")
        num_shards, index = int(num_shards), int(index)
        if self._arrays is None:
            return self._copy(_batches=_Shard(self._batches, num_shards, index))
        if self._seed is not None or self._batch_size is not None:
            raise ValueError("shard: call shard() before shuffle() and batch() (it picks rows)")
        arrays = tuple(np.ascontiguousarray(a[index::num_shards]) for a in self._arrays)
        return self._copy(_arrays=arrays)

    def batch(self, batch_size, drop_remainder=False) -> Dataset:
        if self._arrays is None:
            raise ValueError("batch: a Dataset made by from_batches is batched already")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        return self._copy(_batch_size=batch_size, _drop_remainder=bool(drop_remainder))

    def map(self, function: Callable) -> Dataset:
        """Apply ``function(x, y)`` (or ``(x, y, w)``) to every batch; it returns the new
        tuple. It runs on the prefetch thread when there is one: NumPy calls there overlap
        with the kernels, pure-Python loops hold the GIL and slow the training loop."""
        if not callable(function):
            raise TypeError(f"function: expected a callable, got {function!r}")
        if self._arrays is not None and self._batch_size is None:
            raise ValueError("map: applies to batches; call batch(n) first")
        return self._copy(_maps=(*self._maps, function))

    def prefetch(self, buffer_size) -> Dataset:
        """Prepare batches on a background thread, up to ``buffer_size`` ahead (0: none)."""
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 0:
            raise ValueError(f"buffer_size: expected an int >= 0, got {buffer_size!r}")
        return self._copy(_prefetch=buffer_size)

    # -- reading -------------------------------------------------------------------------
    @property
    def is_batched(self) -> bool:
        """Whether the dataset yields batches (made by ``from_batches``, or ``batch`` was
        called); rows of ``from_tensor_slices`` need ``batch`` first."""
        return self._arrays is None or self._batch_size is not None

    @property
    def feature_count(self) -> int | None:
        """The features per sample of x (tensor slices of (n, features) inputs), or None."""
        if self._arrays is None or self._arrays[0].ndim != 2:
            return None
        return self._arrays[0].shape[1]

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """The per-sample shape of x for tensor slices, ``(features,)`` or ``(a, b, ...)``;
        None for batches from an iterable (their shape is known when they come)."""
        if self._arrays is None or self._arrays[0].ndim < 2:
            return None
        return tuple(self._arrays[0].shape[1:])

    def __len__(self) -> int:
        """Batches in one pass (from_tensor_slices datasets, and sized iterables)."""
        if self._arrays is None:
            return len(self._batches)
        rows, size = self._arrays[0].shape[0], self._batch_size or 1
        return rows // size if self._drop_remainder else -(-rows // size)

    def batches_per_pass(self) -> int | None:
        try:
            return len(self)
        except TypeError:
            return None

    def iterate(self, pass_index: int = 0) -> Iterator[tuple]:
        """The batches of one pass over the data, on the calling thread."""
        if self._arrays is None:
            source = iter(self._batches)
        else:
            source = self._slices(pass_index)
        for batch in source:
            for function in self._maps:
                batch = function(*batch) if isinstance(batch, (tuple, list)) else function(batch)
            yield batch

    __iter__ = iterate

    def _slices(self, pass_index: int) -> Iterator[tuple]:
        arrays = self._arrays
        rows = arrays[0].shape[0]
        size = self._batch_size or 1
        order = None
        if self._seed is not None:
            draw = pass_index if self._reshuffle else 0
            order = np.random.default_rng((self._seed, draw)).permutation(rows)
        stop = rows - rows % size if self._drop_remainder else rows
        take_rows = kernels.take_rows
        for start in range(0, stop, size):
            end = min(start + size, rows)
            if order is None:
                batch = tuple(a[start:end] for a in arrays)
            else:
                indices = order[start:end]
                batch = tuple(
                    take_rows(a, indices, out=np.empty((len(indices), *a.shape[1:]), a.dtype))
                    for a in arrays
                )
            yield batch if self._batch_size is not None else tuple(b[0] for b in batch)

    def __repr__(self) -> str:
        kind = "tensor slices" if self._arrays is not None else "batches"
        return (
            f"<Dataset of {kind} batch={self._batch_size} shuffle={self._seed is not None} "
            f"maps={len(self._maps)} prefetch={self._prefetch}>"
        )


class _Shard:
    """Every ``num_shards``-th item of an iterable of batches, from ``index``: re-iterable
    when the iterable is."""

    def __init__(self, batches: Iterable, num_shards: int, index: int):
        self.batches, self.num_shards, self.index = batches, num_shards, index

    def __iter__(self) -> Iterator:
        for position, batch in enumerate(self.batches):
            if position % self.num_shards == self.index:
                yield batch

    def __len__(self) -> int:
        total = len(self.batches)
        return max(0, -(-(total - self.index) // self.num_shards))


def stream(dataset: Dataset, passes: int | None, batch_limit: int | None) -> Iterator:
    """The batches of ``passes`` passes (None: endless) with END_OF_PASS after each pass,
    at most ``batch_limit`` batches in all; EXHAUSTED when a pass yields nothing."""
    produced, pass_index = 0, 0
    while passes is None or pass_index < passes:
        count = 0
        for batch in dataset.iterate(pass_index):
            yield batch
            count += 1
            produced += 1
            if batch_limit is not None and produced >= batch_limit:
                return
        if count == 0:
            yield EXHAUSTED
            return
        yield END_OF_PASS
        pass_index += 1


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Runs ``source`` (an iterator) on a background thread, ``buffer_size`` items ahead.

    ``next()`` returns the next item or raises what the producer raised; ``close()`` stops the
    producer at its next item and joins it (also on errors: use it in a ``finally``)."""

    def __init__(self, source: Iterator, buffer_size: int, name: str = "densekit-prefetch"):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, buffer_size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        put, stop = self._queue.put, self._stop
        try:
            for item in self._source:
                if stop.is_set():
                    return
                put(item)  # close() drains the queue, so this never blocks forever
        except BaseException as error:
            if not stop.is_set():
                put(_Failure(error))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
        if not stop.is_set():
            put(EXHAUSTED)

    def next(self):
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)


class DirectSource:
    """The same interface as Prefetcher, reading ``source`` on the calling thread."""

    def __init__(self, source: Iterator):
        self._source = source

    def next(self):
        return next(self._source, EXHAUSTED)

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


def open_source(dataset: Dataset, passes: int | None, batch_limit: int | None):
    """The batch stream of ``dataset`` for one fit, prefetched if the dataset asks for it."""
    items = stream(dataset, passes, batch_limit)
    if dataset._prefetch:
        return Prefetcher(items, dataset._prefetch)
    return DirectSource(items)
